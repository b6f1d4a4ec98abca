"""Residual vector quantization (Zeghidour et al. 2021, SoundStream; after Juang & Gray 1982):
the ``residual-vq`` bottleneck (Q codebooks, each quantizing what the ones before left; built on
``vector-quantize-pytorch``) and the ``rvq-vae`` variant (the vq-vae's networks and
autoregressive prior over the indices, residual VQ instead of VQ)."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import autoencoder


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks.libvq import ResidualVQBottleneck

    register(ResidualVQBottleneck)


RVQ_VAE = autoencoder({"encoder": {"name": "conv", "channels": [32, 64]},
                       "decoder": {"name": "conv", "channels": [64, 32]}},
                      bottleneck={"name": "residual-vq", "stages": 4, "codebook_size": 32}, code_dim=16,
                      sampler={"name": "index-ar"})


@hookimpl
def aepipe_register_variants(register):
    register(Variant("rvq-vae", "Residual vector quantization (4 stages of 32 moving-average codewords, the decoder "
                                "sees their sum), an autoregressive prior over the indices fitted after training.",
                     RVQ_VAE))
