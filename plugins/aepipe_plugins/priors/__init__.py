"""Priors p(z): standard normal, a mixture of Gaussians (the adversarial autoencoder paper's
10-component 2-D ring as a preset), and a swiss roll."""

from aepipe import hookimpl


@hookimpl
def aepipe_register_priors(register):
    from aepipe_plugins.priors import distributions

    for cls in (distributions.StandardNormal, distributions.GaussianMixture, distributions.SwissRoll):
        register(cls)
