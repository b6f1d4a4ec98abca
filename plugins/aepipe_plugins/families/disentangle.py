"""Disentangling VAEs, each a regularizer composed with the gaussian bottleneck and the
standard-normal prior: the beta-TCVAE (``tc-decomposition``: the KL split into index-code mutual
information, total correlation and dimension-wise KL, Chen et al. 2018), the FactorVAE
(``tc-discriminator``: a discriminator's estimate of the total correlation, Kim & Mnih 2018),
DIP-VAE I and II (``dip``: the covariance of the codes pushed to the identity, Kumar et al.
2018) and the capacity-annealed beta-VAE (``capacity``: the KL pushed towards a growing capacity
C, Burgess et al. 2018)."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import standard_vae


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.regularizers import disentangle as r

    register(r.TCDecomposition)
    register(r.TCDiscriminator)
    register(r.DIP)
    register(r.Capacity)


def _vae(regularizers: dict) -> dict:
    return standard_vae(regularizers=regularizers)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("beta-tcvae", "VAE whose KL is split into index-code MI, total correlation and dimension-wise KL "
                     "(minibatch-weighted estimates), the TC weighted by beta (Chen et al. 2018).",
                     _vae({"tc-decomposition": {}})))
    register(Variant("factor-vae", "VAE plus gamma times a discriminator's total-correlation estimate (codes against "
                     "dimension-wise permuted codes; the discriminator has its own optimizer; Kim & Mnih 2018).",
                     _vae({"kl": {"beta": 1.0}, "tc-discriminator": {}})))
    register(Variant("dip-vae", "VAE plus a penalty pushing the covariance of the encoder's mean (type i) or of the "
                     "aggregate posterior (type ii) to the identity (Kumar et al. 2018).",
                     _vae({"kl": {"beta": 1.0}, "dip": {}})))
    register(Variant("beta-vae-capacity", "beta-VAE whose KL is pushed towards a capacity C that grows linearly "
                     "on a schedule: gamma * |KL - C| (Burgess et al. 2018).",
                     _vae({"capacity": {}})))
