"""Variational and conditional variational autoencoders: the KL regularizer (analytic or
Monte Carlo, with a beta weight), the negative ELBO and the importance-weighted bound."""

from aepipe import Variant, hookimpl


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.vae.kl import KLDivergence

    register(KLDivergence)


def _vae(conditional: bool) -> dict:
    return {"model": {
        "encoder": {"name": "mlp", "hidden": [256, 128], "distribution": "gaussian"},
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


@hookimpl
def aepipe_run_end(run, metrics):
    from aepipe_plugins.vae.kl import KLDivergence, importance_weighted_nll

    kls = [r for r in run.model.regularizers.values() if isinstance(r, KLDivergence)]
    if not kls or not run.model.prior.has_log_prob:
        return None
    k = kls[0].config.iw_samples
    return {"iw_nll": importance_weighted_nll(run.model, run.data.test, None, k)}
