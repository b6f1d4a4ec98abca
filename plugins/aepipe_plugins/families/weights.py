"""Weight-regularized autoencoders: L1 (lambda sum |W|) and L2 (lambda sum W^2) penalties."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import ONE_LAYER, autoencoder


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.regularizers import weights as penalties

    register(penalties.WeightL1)
    register(penalties.WeightL2)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("weight-l1", "One-layer autoencoder with an L1 penalty on its weights.",
                     autoencoder(ONE_LAYER, regularizers={"weight-l1": {"lam": 1e-3}})))
    register(Variant("weight-l2", "One-layer autoencoder with an L2 penalty on its weights (weight decay).",
                     autoencoder(ONE_LAYER, regularizers={"weight-l2": {"lam": 1e-3}})))
