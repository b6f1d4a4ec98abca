"""Sparse autoencoders: an L1 activity penalty, the KL sparsity target, k-sparse codes, and
code statistics (mean activation, share of near-zero units) that each sparse component logs
every epoch as ``val_code.mean_activation`` and ``val_code.near_zero_share``."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import ONE_LAYER, autoencoder


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.regularizers import sparsity as penalties

    register(penalties.ActivityL1)
    register(penalties.KLSparsity)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("sparse", "Sigmoid code pulled to a mean activation rho by the KL sparsity target.",
                     autoencoder(ONE_LAYER, regularizers={"kl-sparsity": {"rho": 0.05, "beta": 1.0}})))
    register(Variant("sparse-l1", "Code pushed to zero by an L1 activity penalty lambda * sum_j |h_j|.",
                     autoencoder(ONE_LAYER, regularizers={"activity-l1": {"lam": 1e-2}})))
    register(Variant("k-sparse", "Only the k largest code units of each input are kept (Makhzani & Frey).",
                     autoencoder(ONE_LAYER, encoder={"name": "one-layer", "activation": "relu", "top_k": 10})))
