"""Autoencoders whose aggregate posterior is matched to the prior by a divergence, and the
regularized deterministic autoencoders: the ``prior-mmd`` (RBF or inverse multiquadric kernel),
``sliced-wasserstein``, ``code-l2`` and ``decoder-gradient`` regularizers, composed into
``info-vae`` (Zhao et al.), ``wae-mmd`` (Tolstikhin et al.), ``swae`` (Kolouri et al.),
``rae-l2`` and ``rae-gp`` (Ghosh et al. 2020, sampled through the ``gmm`` sampler)."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import standard_vae

#: InfoVAE's alpha and lambda: the KL is weighted 1 - alpha (alpha = 0: the ELBO's KL) and the
#: MMD alpha + lambda - 1; why lambda = 10: docs/variants.md, "InfoVAE's alpha and lambda"
INFO_ALPHA, INFO_LAMBDA = 0.0, 10.0


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.regularizers import divergences as penalties

    register(penalties.PriorMMD)
    register(penalties.SlicedWasserstein)
    register(penalties.CodeL2)
    register(penalties.DecoderGradient)


def _model(bottleneck: str, regularizers: dict, prior: bool = True, **extra) -> dict:
    """The standard VAE with another bottleneck and regularizers (no prior: ``prior=False``)."""
    return standard_vae(
        bottleneck={"name": bottleneck}, regularizers=regularizers, **({} if prior else {"prior": None}), **extra
    )


@hookimpl
def aepipe_register_variants(register):
    register(Variant(
        "info-vae",
        "InfoVAE (MMD-VAE): the ELBO with the KL weighted 1 - alpha plus (alpha + lambda - 1) * MMD between the codes "
        "and prior samples.",
        _model("gaussian",
               {"kl": {"beta": 1.0 - INFO_ALPHA},
                "prior-mmd": {"lam": INFO_ALPHA + INFO_LAMBDA - 1.0, "kernel": "imq"}}),
    ))
    register(Variant(
        "wae-mmd",
        "Wasserstein autoencoder: deterministic codes matched to the prior by an MMD penalty (inverse multiquadric or "
        "RBF kernel).",
        _model("deterministic", {"prior-mmd": {"lam": 10.0, "kernel": "imq"}}),
    ))
    register(Variant(
        "swae",
        "Sliced-Wasserstein autoencoder: codes matched to the prior by the sliced Wasserstein distance over random "
        "projections.",
        _model("deterministic", {"sliced-wasserstein": {"lam": 10.0, "projections": 50}}),
    ))
    gmm = {"name": "gmm", "components": 10}
    register(Variant(
        "rae-l2",
        "Regularized autoencoder: deterministic code with beta * |z|^2 / 2 and L2 decoder weights; samples from a GMM "
        "fitted on the codes.",
        _model("deterministic", {"code-l2": {"beta": 1e-4}, "weight-l2": {"lam": 1e-7, "targets": "decoder"}},
               prior=False, sampler=gmm),
    ))
    register(Variant(
        "rae-gp",
        "Regularized autoencoder with a gradient penalty: beta * |z|^2 / 2 and lambda * |grad_z D(z)|^2; samples from "
        "a GMM fitted on the codes.",
        _model("deterministic", {"code-l2": {"beta": 1e-4}, "decoder-gradient": {"lam": 1e-7}}, prior=False,
               sampler=gmm),
    ))
