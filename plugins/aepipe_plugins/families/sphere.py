"""Hyperspherical codes (Davidson et al. 2018): the ``vmf`` bottleneck (a von Mises-Fisher
posterior on the unit sphere, reparameterised through Wood's rejection sampler and a
Householder reflection), the ``spherical-uniform`` prior (its KL to a vMF in closed form, with
Bessel functions) and the ``svae`` variant that composes them with the ``kl`` regularizer."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import standard_vae


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks.vmf import VMFBottleneck

    register(VMFBottleneck)


@hookimpl
def aepipe_register_priors(register):
    from aepipe_plugins.bottlenecks.vmf import SphericalUniform

    register(SphericalUniform)


@hookimpl
def aepipe_register_variants(register):
    register(Variant(
        "svae",
        "Hyperspherical VAE: a von Mises-Fisher posterior on the unit sphere of R^code_dim, uniform prior there, "
        "closed-form KL.",
        standard_vae(bottleneck={"name": "vmf"}, prior={"name": "spherical-uniform"}),
    ))
