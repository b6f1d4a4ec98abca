"""Sparse autoencoders: an L1 activity penalty, the KL sparsity target, k-sparse codes, and
code statistics (mean activation, share of near-zero units) that each sparse component logs
every epoch as ``val_code.mean_activation`` and ``val_code.near_zero_share``."""

from aepipe.plugin import Variant, hookimpl


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.sparse import penalties

    register(penalties.ActivityL1)
    register(penalties.KLSparsity)


@hookimpl
def aepipe_register_variants(register):
    one_layer = {"encoder": {"name": "one-layer", "activation": "sigmoid"}, "decoder": {"name": "one-layer"}, "likelihood": "bernoulli"}
    register(Variant("sparse", "Sigmoid code pulled to a mean activation rho by the KL sparsity target.",
                     {"model": {**one_layer, "regularizers": {"kl-sparsity": {"rho": 0.05, "beta": 1.0}}}}))
    register(Variant("sparse-l1", "Code pushed to zero by an L1 activity penalty lambda * sum_j |h_j|.",
                     {"model": {**one_layer, "regularizers": {"activity-l1": {"lam": 1e-2}}}}))
    register(Variant("k-sparse", "Only the k largest code units of each input are kept (Makhzani & Frey).",
                     {"model": {"encoder": {"name": "one-layer", "activation": "relu", "top_k": 10},
                                "decoder": {"name": "one-layer"}, "likelihood": "bernoulli"}}))
