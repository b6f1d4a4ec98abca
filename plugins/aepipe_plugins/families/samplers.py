"""Ex-post samplers, fitted on the training codes after training (Pythae's "samplers"):
``prior`` (the model's own prior, or N(0, I) for a model without one), ``gmm`` (a Gaussian
mixture, fitted by scikit-learn and drawn from in torch) and ``two-stage`` (a second VAE fitted
on the codes, Dai & Wipf 2019)."""

from aepipe.plugin import hookimpl


@hookimpl
def aepipe_register_samplers(register):
    from aepipe_plugins.samplers import basic
    from aepipe_plugins.samplers.two_stage import TwoStageSampler

    register(basic.PriorSampler)
    register(basic.GMMSampler)
    register(TwoStageSampler)
