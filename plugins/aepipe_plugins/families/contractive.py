"""Contractive autoencoders: lambda * ||dh/dx||_F^2, by closed form, exact autograd or an
unbiased random-projection estimate; the Jacobian norm is logged on validation data."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import ONE_LAYER, autoencoder


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.regularizers.contractive import Contractive

    register(Contractive)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("contractive", "One-layer sigmoid autoencoder with the contractive penalty (closed form).",
                     autoencoder(ONE_LAYER, regularizers={"contractive": {"lam": 0.1}})))
