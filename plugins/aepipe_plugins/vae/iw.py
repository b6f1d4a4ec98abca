"""The importance-weighted bound as a training loss (the IWAE, Burda et al. 2016)."""

from __future__ import annotations

import torch
from pydantic import Field

from aepipe.components import ComponentConfig, Regularizer
from aepipe.errors import ConfigError
from aepipe.stats import importance_weighted_bound
from aepipe_plugins.vae.kl import _closed_form, importance_weighted_nll


class IWBoundConfig(ComponentConfig):
    """``iw_samples``: K of the importance-weighted bound reported on test data
    (``test_iw_nll``); the bound trained on uses K = ``model.samples`` draws."""

    iw_samples: int = Field(100, ge=1, le=10000, description="K of the importance-weighted bound reported on test data (test_iw_nll)")


class IWBound(Regularizer):
    """Makes the loss -log 1/K sum_k p(x, z_k) / q(z_k | x) over K = model.samples draws (IWAE).

    aepipe's loss is ``recon + penalties``, ``recon`` being the mean over the K draws of
    -log p(x | z_k); this penalty is ``-IW bound - recon``, so that the total is the negative
    importance-weighted bound, averaged over the batch (logged ``penalty.<key>``: the bound's
    gap to the draws' mean reconstruction term, at most the Monte Carlo KL). With K = 1 the
    loss is the VAE's negative ELBO with a Monte Carlo KL estimate.

    ``evaluate`` (validation and test data) gives ``neg_elbo`` (reconstruction plus the KL, in
    closed form where one exists), ``kl`` and ``iw_bound`` (the bound itself, a lower bound of
    log p(x) with K = ``model.samples``, nats per example: ``-val_iw_bound`` is ``val_loss``);
    ``final_metrics`` gives ``iw_nll`` with ``iw_samples`` draws, as the KL regularizer does.
    """

    name = "iw-bound"
    Config = IWBoundConfig

    def setup(self, model) -> None:
        if model.prior is None:
            raise ConfigError("regularizer 'iw-bound' needs a prior: set [model.prior] name = ... (e.g. standard-normal)")
        if not model.prior.has_log_prob:
            raise ConfigError(f"regularizer 'iw-bound' needs the prior's log density; prior '{model.prior.name}' has none")
        if not model.probe().stochastic:
            raise ConfigError("regularizer 'iw-bound' needs a stochastic code: set [model.bottleneck] name = \"gaussian\" "
                              f"(encoder '{model.encoder.name}' with bottleneck '{model.bottleneck.name or 'none'}' gives a deterministic code)")

    def terms(self, step) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log p(x | z), log p(z), log q(z | x))`` of the step's K draws, each ``(K, n)``."""
        model, code = step.model, step.encoding
        n, k = step.x.shape[0], code.samples
        target = step.x.repeat(k, 1) if k > 1 else step.x
        log_px = -model.likelihood.nll(step.output, target).reshape(k, n)
        y = step.y if model.prior.class_conditional else None
        log_pz = model.prior.log_prob(step.z, None if y is None else y.repeat(k)).reshape(k, n)
        return log_px, log_pz, code.log_q_of_z()

    def bound(self, step) -> torch.Tensor:
        """The importance-weighted bound of log p(x) per example, shape ``(n,)``."""
        return importance_weighted_bound(*self.terms(step))

    def penalty(self, step) -> torch.Tensor:
        log_px, log_pz, log_q = self.terms(step)
        # recon (the core's term) is -log_px.mean(): the total loss is -bound.mean()
        return log_px.mean() - importance_weighted_bound(log_px, log_pz, log_q).mean()

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        log_px, log_pz, log_q = self.terms(step)
        y = step.y if step.model.prior.class_conditional else None
        kl = _closed_form(step.encoding, step.model.prior, y)
        if kl is None:
            kl = (log_q - log_pz).mean(0)
        return {"kl": kl.mean(), "neg_elbo": (kl - log_px.mean(0)).mean(),
                "iw_bound": importance_weighted_bound(log_px, log_pz, log_q).mean()}

    def final_metrics(self, model, data) -> dict[str, float]:
        """``iw_nll``: -log p(x) of the test split by the importance-weighted bound with
        ``iw_samples`` draws."""
        return {"iw_nll": importance_weighted_nll(model, data.test, None, self.config.iw_samples)}
