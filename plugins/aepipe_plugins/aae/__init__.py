"""Adversarial autoencoders (Makhzani et al. 2015): a discriminator tells prior samples from
codes and the encoder learns to fool it; works with any prior that can be sampled."""

from aepipe.plugin import Variant, hookimpl


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.aae.adversarial import Adversarial

    register(Adversarial)


@hookimpl
def aepipe_register_variants(register):
    base = {"encoder": {"name": "mlp", "hidden": [256, 128]}, "decoder": {"name": "mlp", "hidden": [128, 256]}, "likelihood": "bernoulli"}
    register(Variant("aae", "Deterministic encoder whose aggregated codes are matched to the prior by a discriminator.",
                     {"model": {**base, "prior": {"name": "standard-normal"}, "regularizers": {"adversarial": {}}}}))
    register(Variant("aae-supervised", "AAE whose discriminator sees the label; class c is tied to mixture component c.",
                     {"model": {**base, "code_dim": 2,
                                "prior": {"name": "mixture", "components": 10, "preset": "ring", "class_conditional": True},
                                "regularizers": {"adversarial": {"supervised": True}}}}))
