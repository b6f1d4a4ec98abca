"""The aepipe plugin: the ``mmd`` regularizer and the ``wae`` variant (imports stay light)."""

from aepipe.plugin import Variant, hookimpl


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_wae.mmd import MMDRegularizer

    register(MMDRegularizer)


@hookimpl
def aepipe_register_variants(register):
    register(Variant(
        "wae",
        "Wasserstein autoencoder (WAE-MMD): deterministic codes matched to the prior by an MMD penalty.",
        {"model": {
            "encoder": {"name": "mlp", "hidden": [256, 128]},
            "decoder": {"name": "mlp", "hidden": [128, 256]},
            "prior": {"name": "standard-normal"},
            "likelihood": "bernoulli",
            "regularizers": {"mmd": {"lam": 10.0}},
        }},
    ))
