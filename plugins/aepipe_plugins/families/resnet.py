"""Residual convolutional encoder and decoder for colour images, and the ``resnet`` variant.

``resnet`` names only the encoder and decoder, so every family composes with it by adding its
own sections: a corruption (denoising), a Gaussian encoder, prior and KL (VAE; ``resnet-vae``
is that composition), ``model.conditional = true`` (CVAE), or the adversarial regularizer
(AAE). ``pipelines/resnet-dae-images.toml`` and ``pipelines/resnet-vae-hf.toml`` are two of them.
"""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import autoencoder, standard_vae

RESNET = {"encoder": {"name": "resnet"}, "decoder": {"name": "resnet"}}


@hookimpl
def aepipe_register_encoders(register):
    from aepipe_plugins.networks.resnet import ResNetEncoder

    register(ResNetEncoder)


@hookimpl
def aepipe_register_decoders(register):
    from aepipe_plugins.networks.resnet import ResNetDecoder

    register(ResNetDecoder)


@hookimpl
def aepipe_register_variants(register):
    register(Variant(
        "resnet",
        "Residual convolutional encoder and decoder for colour images (32x32, 64x64), Bernoulli likelihood.",
        autoencoder(RESNET, code_dim=64),
    ))
    register(Variant(
        "resnet-vae",
        "A VAE on the residual convolutional encoder and decoder: Gaussian q(z|x), standard normal prior, KL.",
        standard_vae(networks=RESNET, code_dim=64, regularizers={"kl": {}}),
    ))
