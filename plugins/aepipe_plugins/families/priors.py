"""Priors p(z): standard normal, a mixture of Gaussians (the adversarial autoencoder paper's
10-component 2-D ring as a preset; fixed, or with learned means and scales), a swiss roll, and
the VampPrior (a mixture of the model's posteriors at learned pseudo-inputs)."""

from aepipe.plugin import hookimpl


@hookimpl
def aepipe_register_priors(register):
    from aepipe_plugins.priors import distributions, vamp

    for cls in (distributions.StandardNormal, distributions.GaussianMixture, distributions.SwissRoll, vamp.VampPrior):
        register(cls)
