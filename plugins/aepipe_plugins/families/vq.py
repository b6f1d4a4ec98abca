"""Vector-quantized autoencoders (van den Oord et al. 2017): the ``quantized`` bottleneck (a
K x D codebook, nearest codeword with the straight-through estimator, codebook and commitment
losses, optional moving-average codebook updates and restarts of dead codewords), the
``index-ar`` sampler (an autoregressive prior over codeword indices, fitted after training) and
the ``vq-vae`` variant."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import autoencoder


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks.quantize import Quantized

    register(Quantized)


@hookimpl
def aepipe_register_samplers(register):
    from aepipe_plugins.samplers.index_ar import IndexAutoregressive

    register(IndexAutoregressive)


VQ_VAE = autoencoder(
    {"encoder": {"name": "conv", "channels": [32, 64]}, "decoder": {"name": "conv", "channels": [64, 32]}},
    bottleneck={"name": "quantized", "codebook_size": 32, "groups": 4, "beta": 0.25, "ema": True, "dead_after": 50},
    sampler={"name": "index-ar"},
)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("vq-vae", "Vector-quantized code (groups of codebook indices, straight-through), "
                               "an autoregressive prior over the indices fitted after training.", VQ_VAE))
