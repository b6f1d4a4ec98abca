"""Adversarial autoencoders (Makhzani et al. 2015): a discriminator tells prior samples from
codes and the encoder learns to fool it; works with any prior that can be sampled."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import autoencoder


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.regularizers.adversarial import Adversarial

    register(Adversarial)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("aae", "Deterministic encoder whose aggregated codes are matched to the prior by a discriminator.",
                     autoencoder(prior={"name": "standard-normal"}, regularizers={"adversarial": {}})))
    register(Variant("aae-supervised",
                     "AAE whose discriminator sees the label; class c is tied to mixture component c.",
                     autoencoder(code_dim=2,
                                 prior={"name": "mixture", "components": 10, "preset": "ring",
                                        "class_conditional": True},
                                 regularizers={"adversarial": {"supervised": True}})))
