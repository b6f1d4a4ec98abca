"""VAEs with reconstruction losses other than a pixel likelihood: the VAE-GAN (Larsen et al. 2016:
a discriminator's features as the similarity, the discriminator with its own optimizer), the
MS-SSIM VAE (1 - MS-SSIM, for images) and the log-cosh VAE (PyTorch-VAE's). Each loss is a
regularizer that replaces the likelihood's term (see :mod:`aepipe_plugins.regularizers.perceptual`)."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import KL, standard_vae


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.regularizers.learned_similarity import LearnedSimilarity
    from aepipe_plugins.regularizers.perceptual import MSSSIM, LogCosh

    register(LearnedSimilarity)
    register(MSSSIM)
    register(LogCosh)


#: the variants' own settings of each loss, chosen by measurement: docs/variants.md, "The
#: perceptual losses' weights"
VARIANT_LOSS_SETTINGS = {
    "msssim": {"weight": 3.0},
    "logcosh": {"weight": 3.0},
    "learned-similarity": {"weight": 10.0, "feature_layer": 1},
}


def _vae(loss: str) -> dict:
    # the Bernoulli likelihood's mean (a sigmoid) gives the reconstruction; its NLL stays logged as recon
    return standard_vae(regularizers={**KL, loss: dict(VARIANT_LOSS_SETTINGS[loss])})


@hookimpl
def aepipe_register_variants(register):
    register(Variant("vae-gan",
                     "VAE whose reconstruction loss is a discriminator's feature distance (learned similarity); "
                                "the discriminator tells inputs from reconstructions and prior samples.",
                                _vae("learned-similarity")))
    register(Variant("msssim-vae",
                     "VAE trained on 1 - MS-SSIM of its reconstructions (images) instead of a pixel likelihood.",
                     _vae("msssim")))
    register(Variant("logcosh-vae",
                     "VAE trained on the log-cosh reconstruction loss (quadratic for small errors, linear for large).",
                     _vae("logcosh")))
