"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made
Simple"): the ``fsq`` bottleneck (each dimension of a code slice bounded and rounded to a few
levels: an implicit grid codebook, nothing to learn, no codebook collapse; built on
``vector-quantize-pytorch``) and the ``fsq-vae`` variant (the vq-vae's networks and
autoregressive prior over the indices, FSQ instead of VQ)."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import autoencoder


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks.libvq import FSQBottleneck

    register(FSQBottleneck)


FSQ_VAE = autoencoder({"encoder": {"name": "conv", "channels": [32, 64]},
                       "decoder": {"name": "conv", "channels": [64, 32]}},
                      # a 4x4x4x4 grid (256 points a slice): the index-ar prior's masked network grows as
                      # (slices x points)^2, so the 8x5x5x5 grid of pipelines/fsq-vae.toml takes minutes to fit
                      bottleneck={"name": "fsq", "levels": [4, 4, 4, 4], "groups": 4}, code_dim=16,
                      sampler={"name": "index-ar"})


@hookimpl
def aepipe_register_variants(register):
    register(Variant("fsq-vae", "Finite scalar quantization (4 slices, each on a 4x4x4x4 grid: no codebook to learn), "
                                "an autoregressive prior over the indices fitted after training.", FSQ_VAE))
