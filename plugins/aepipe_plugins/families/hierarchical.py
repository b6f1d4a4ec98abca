"""Hierarchical VAEs, whose code is several latent groups z1 (bottom) ... zL (top): the Ladder
VAE (Sønderby et al. 2016: a bottom-up path whose estimates are merged, precision-weighted, with
a top-down prior) and a top-down hierarchical VAE in the NVAE/VDVAE style (Vahdat & Kautz 2020,
Child 2021: residual cells, each group entering the decoder at its own depth, posteriors given
as residuals of the conditional priors). Both train on the ELBO of the joint latent (the ``kl``
regularizer sums the groups' KLs, each logged as ``kl.<group>``), with the KL warmed up (a
hierarchy collapses onto its lowest groups at beta = 1 from the start). The hierarchy's
widths are declared once in ``[model.shared]``; every component reads them there."""

from aepipe.plugin import Variant, hookimpl


@hookimpl
def aepipe_register_encoders(register):
    from aepipe_plugins.networks.hierarchy import HierarchyEncoder, LadderEncoder

    register(LadderEncoder)
    register(HierarchyEncoder)


@hookimpl
def aepipe_register_decoders(register):
    from aepipe_plugins.networks.hierarchy import LadderDecoder, TopDownDecoder

    register(LadderDecoder)
    register(TopDownDecoder)


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks.hierarchy import LadderBottleneck, TopDownBottleneck

    register(LadderBottleneck)
    register(TopDownBottleneck)


@hookimpl
def aepipe_register_priors(register):
    from aepipe_plugins.bottlenecks.hierarchy import HierarchicalPrior

    register(HierarchicalPrior)


def hierarchy(network: str, bottleneck: str, shared: dict, warmup: int = 10) -> dict:
    """``{"model": ...}`` of a hierarchical VAE: its networks, bottleneck and prior, the KL of
    the joint latent warmed up over ``warmup`` epochs, and ``shared`` (its widths) once."""
    return {"model": {"code_dim": sum(shared["dims"]), "likelihood": "bernoulli", "shared": dict(shared),
                      "encoder": {"name": network}, "decoder": {"name": network},
                      "bottleneck": {"name": bottleneck}, "prior": {"name": "hierarchical"},
                      "regularizers": {"kl": {"beta": 1.0, "warmup_epochs": warmup}}}}


@hookimpl
def aepipe_register_variants(register):
    register(Variant("ladder-vae", "Ladder VAE (Sønderby et al. 2016): latent groups z1..zL whose posteriors merge "
                                   "bottom-up estimates with the top-down prior p(z_i | z_(i+1)), precision-weighted; "
                                   "KL warm-up.",
                     hierarchy("ladder", "ladder", {"hidden": [256, 128, 64], "dims": [16, 8, 4]})))
    register(Variant("hvae", "Top-down hierarchical VAE (NVAE, VDVAE): residual cells, three latent groups entering "
                             "the decoder at their own depths, posteriors as residuals of the conditional priors; KL "
                             "warm-up.",
                     hierarchy("hvae", "top-down", {"width": 128, "dims": [8, 8, 8]})))
