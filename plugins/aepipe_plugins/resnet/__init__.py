"""Residual convolutional encoder and decoder for colour images, and the ``resnet`` variant.

``resnet`` names only the encoder and decoder, so every family composes with it by adding its
own sections: a corruption (denoising), a Gaussian encoder, prior and KL (VAE; ``resnet-vae``
is that composition), ``model.conditional = true`` (CVAE), or the adversarial regularizer
(AAE). ``pipelines/resnet-dae-images.toml`` and ``pipelines/resnet-vae-hf.toml`` are two of them.
"""

from aepipe.plugin import Variant, hookimpl

RESNET = {"encoder": {"name": "resnet"}, "decoder": {"name": "resnet"}}


@hookimpl
def aepipe_register_encoders(register):
    from aepipe_plugins.resnet.nets import ResNetEncoder

    register(ResNetEncoder)


@hookimpl
def aepipe_register_decoders(register):
    from aepipe_plugins.resnet.nets import ResNetDecoder

    register(ResNetDecoder)


@hookimpl
def aepipe_register_variants(register):
    register(Variant(
        "resnet",
        "Residual convolutional encoder and decoder for colour images (32x32, 64x64), Bernoulli likelihood.",
        {"model": {**RESNET, "code_dim": 64, "likelihood": "bernoulli"}},
    ))
    register(Variant(
        "resnet-vae",
        "A VAE on the residual convolutional encoder and decoder: Gaussian q(z|x), standard normal prior, KL.",
        {"model": {"encoder": {"name": "resnet"}, "bottleneck": {"name": "gaussian"}, "decoder": {"name": "resnet"},
                   "code_dim": 64, "likelihood": "bernoulli", "prior": {"name": "standard-normal"}, "regularizers": {"kl": {}}}},
    ))
