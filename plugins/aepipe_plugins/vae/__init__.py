"""Variational and conditional variational autoencoders: the KL regularizer (analytic or
Monte Carlo, with a beta weight), the negative ELBO and the importance-weighted bound; the
IWAE (the ``iw-bound`` regularizer: trained on the importance-weighted bound) and the VAE with
a VampPrior."""

from aepipe import Variant, hookimpl


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.vae.iw import IWBound
    from aepipe_plugins.vae.kl import KLDivergence

    register(KLDivergence)
    register(IWBound)


def _vae(conditional: bool) -> dict:
    return {"model": {
        "encoder": {"name": "mlp", "hidden": [256, 128]},
        "bottleneck": {"name": "gaussian"},
        "decoder": {"name": "mlp", "hidden": [128, 256]},
        "prior": {"name": "standard-normal"},
        "likelihood": "bernoulli",
        "conditional": conditional,
        "regularizers": {"kl": {"beta": 1.0}},
    }}


@hookimpl
def aepipe_register_variants(register):
    register(Variant("vae", "Gaussian encoder q(z|x), Bernoulli decoder, N(0, I) prior, -ELBO loss (beta-VAE with beta).", _vae(False)))
    register(Variant("cvae", "Conditional VAE: encoder q(z|x, y) and decoder p(x|z, y) see the one-hot label.", _vae(True)))
    register(Variant("iwae", "Importance-weighted autoencoder: the VAE trained on the K-sample importance-weighted bound (K = model.samples).",
                     _iwae()))
    register(Variant("vamp", "VAE with the VampPrior: p(z) a mixture of the posteriors at K learned pseudo-inputs (Monte Carlo KL).",
                     _vamp()))


def _iwae() -> dict:
    tree = _vae(False)
    tree["model"]["samples"] = 5
    tree["model"]["regularizers"] = {"iw-bound": {}}
    return tree


def _vamp() -> dict:
    tree = _vae(False)
    tree["model"]["prior"] = {"name": "vamp", "components": 50}
    tree["model"]["regularizers"] = {"kl": {"beta": 1.0, "method": "monte-carlo"}}
    return tree
