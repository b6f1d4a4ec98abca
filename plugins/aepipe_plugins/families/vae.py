"""Variational and conditional variational autoencoders: the KL regularizer (analytic or
Monte Carlo, with a beta weight), the negative ELBO and the importance-weighted bound; the
IWAE (the ``iw-bound`` regularizer: trained on the importance-weighted bound), the MIWAE,
CIWAE and PIWAE of Rainforth et al. 2018 (the ``miwae-bound``, ``ciwae-bound`` and
``piwae-bound`` regularizers: bounds between the ELBO and the IWAE's, or one for each network)
and the VAE with a VampPrior."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import standard_vae


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.regularizers.iw import CIWAEBound, IWBound, MIWAEBound, PIWAEBound
    from aepipe_plugins.regularizers.kl import KLDivergence

    register(KLDivergence)
    register(IWBound)
    register(MIWAEBound)
    register(CIWAEBound)
    register(PIWAEBound)


def _vae(conditional: bool) -> dict:
    return standard_vae(conditional=conditional)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("vae",
                     "Gaussian encoder q(z|x), Bernoulli decoder, N(0, I) prior, -ELBO loss (beta-VAE with beta).",
                     _vae(False)))
    register(
        Variant("cvae", "Conditional VAE: encoder q(z|x, y) and decoder p(x|z, y) see the one-hot label.", _vae(True))
    )
    register(Variant("iwae",
                     "Importance-weighted autoencoder: the VAE trained on the K-sample importance-weighted bound (K = "
                     "model.samples).",
                     _iwae()))
    register(Variant("miwae",
                     "MIWAE (Rainforth et al. 2018): the VAE trained on the mean of M importance-weighted bounds of K "
                     "draws each "
                             "(model.samples = M K).", _iwae("miwae-bound", {"groups": 4}, 16)))
    register(Variant("ciwae",
                     "CIWAE (Rainforth et al. 2018): the VAE trained on beta ELBO + (1 - beta) IWAE bound over "
                     "model.samples draws.",
                     _iwae("ciwae-bound", {"beta": 0.5}, 16)))
    register(Variant("piwae",
                     "PIWAE (Rainforth et al. 2018): the decoder trained on the IWAE bound of model.samples = M K "
                     "draws, "
                              "the encoder on the MIWAE(M, K) bound of the same draws.",
                              _iwae("piwae-bound", {"groups": 4}, 16)))
    register(Variant("vamp",
                     "VAE with the VampPrior: p(z) a mixture of the posteriors at K learned pseudo-inputs (Monte Carlo "
                     "KL).",
                     _vamp()))


def _iwae(bound: str = "iw-bound", settings: dict | None = None, samples: int = 5) -> dict:
    tree = _vae(False)
    tree["model"]["samples"] = samples
    tree["model"]["regularizers"] = {bound: dict(settings or {})}
    return tree


def _vamp() -> dict:
    tree = _vae(False)
    tree["model"]["prior"] = {"name": "vamp", "components": 50}
    tree["model"]["regularizers"] = {"kl": {"beta": 1.0, "method": "monte-carlo"}}
    return tree
