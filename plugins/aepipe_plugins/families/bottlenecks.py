"""The code's family, separate from the network: a deterministic code, and a diagonal Gaussian
posterior with the reparameterization (the VAE's). Any encoder composes with either."""

from aepipe.plugin import hookimpl


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks import basic

    register(basic.Deterministic)
    register(basic.Gaussian)
