"""VAEs with reconstruction losses other than a pixel likelihood: the VAE-GAN (Larsen et al. 2016:
a discriminator's features as the similarity, the discriminator with its own optimizer), the
MS-SSIM VAE (1 - MS-SSIM, for images) and the log-cosh VAE (PyTorch-VAE's). Each loss is a
regularizer that replaces the likelihood's term (see :mod:`aepipe_plugins.perceptual.losses`)."""

from aepipe import Variant, hookimpl


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.perceptual.gan import LearnedSimilarity
    from aepipe_plugins.perceptual.losses import MSSSIM, LogCosh

    register(LearnedSimilarity)
    register(MSSSIM)
    register(LogCosh)


#: the variants' own settings of each loss, measured on the digits (30 epochs, against the VAE of
#: the same MLPs): at the components' defaults (weight 1; the discriminator's last layer) the KL
#: outweighs these losses there (log-cosh: test KL 1.1 nats, squared error 1.6x the VAE's; the
#: VAE-GAN's code collapses); with these the KL is 4-8 nats, as the VAE's 3
VARIANT_LOSS_SETTINGS = {
    "msssim": {"weight": 3.0},
    "logcosh": {"weight": 3.0},
    "learned-similarity": {"weight": 10.0, "feature_layer": 1},
}


def _vae(loss: str) -> dict:
    return {"model": {
        "encoder": {"name": "mlp", "hidden": [256, 128]},
        "bottleneck": {"name": "gaussian"},
        "decoder": {"name": "mlp", "hidden": [128, 256]},
        "prior": {"name": "standard-normal"},
        "likelihood": "bernoulli",  # its mean (a sigmoid) gives the reconstruction; its NLL stays logged as recon
        "regularizers": {"kl": {"beta": 1.0}, loss: dict(VARIANT_LOSS_SETTINGS[loss])},
    }}


@hookimpl
def aepipe_register_variants(register):
    register(Variant("vae-gan", "VAE whose reconstruction loss is a discriminator's feature distance (learned similarity); "
                                "the discriminator tells inputs from reconstructions and prior samples.", _vae("learned-similarity")))
    register(Variant("msssim-vae", "VAE trained on 1 - MS-SSIM of its reconstructions (images) instead of a pixel likelihood.",
                     _vae("msssim")))
    register(Variant("logcosh-vae", "VAE trained on the log-cosh reconstruction loss (quadratic for small errors, linear for large).",
                     _vae("logcosh")))
