"""The KL regularizer of the (conditional) VAE and the importance-weighted bound."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from aepipe.plugin import (ComponentConfig, ConfigError, DiagNormal, Regularizer, kl_analytic, kl_monte_carlo,
                           seeded_batches)


class KLConfig(ComponentConfig):
    """``beta``: weight of the KL term (1: the ELBO; beta-VAE otherwise), >= 0;
    ``method``: ``analytic`` (closed form, Gaussian prior), ``monte-carlo``
    (mean_l [log q(z_l|x) - log p(z_l)] over the model's L samples, any prior with a log
    density) or ``auto`` (analytic where it exists); ``iw_samples``: K of the
    importance-weighted bound reported on test data."""

    beta: float = Field(1.0, ge=0.0)
    method: Literal["auto", "analytic", "monte-carlo"] = "auto"
    iw_samples: int = Field(100, ge=1, le=10000)


class KLDivergence(Regularizer):
    """beta * KL(q(z | x) || p(z)), averaged over the batch."""

    name = "kl"
    Config = KLConfig
    weight_setting = "beta"

    def setup(self, model) -> None:
        if model.prior is None:
            raise ConfigError("regularizer 'kl' needs a prior: set [model.prior] name = ... (e.g. standard-normal)")
        probe = model.probe()
        if not probe.stochastic:
            raise ConfigError("regularizer 'kl' needs a stochastic code: set [model.bottleneck] name = \"gaussian\" "
                              f"(encoder '{model.encoder.name}' with bottleneck '{model.bottleneck.name or 'none'}' "
                              "gives a deterministic code)")
        if self.config.method != "analytic" and not model.prior.has_log_prob and model.prior.distribution() is None:
            raise ConfigError(f"regularizer 'kl' needs the prior's log density; prior '{model.prior.name}' has none "
                              "(use the adversarial regularizer to match it)")
        if self.config.method == "analytic" and not probe.groups and _closed_form(probe, model.prior, None) is None:
            raise ConfigError(f"kl: method 'analytic' has no closed form for prior '{model.prior.name}' with this "
                              "posterior; use monte-carlo")

    def kl(self, step) -> torch.Tensor:
        """KL(q || p) per example, shape (n,) (beta not applied): in closed form where one
        exists (method auto or analytic), else mean_l [log q(z_l|x) - log p(z_l)] over the
        step's L draws, with the bottleneck's own log q (a flow's log-determinants included)."""
        code = step.encoding
        if code.groups:  # latent groups: the sum of each group's KL given its parents (the chain rule)
            return torch.stack(list(code.group_kls().values())).sum(0)
        prior = step.model.prior
        y = step.y if prior.class_conditional else None
        if self.config.method != "monte-carlo":
            value = _closed_form(code, prior, y)
            if value is not None:
                return value
        n = step.x.shape[0]
        samples = code.samples
        y_rep = None if y is None else y.repeat(samples)
        log_p = code.log_p if code.log_p is not None else prior.log_prob(step.z, y_rep).reshape(samples, n)
        return kl_monte_carlo(code.log_q_of_z(), log_p)

    def penalty(self, step) -> torch.Tensor:
        kl = self.kl(step).mean()
        return kl if self.config.beta == 1.0 else self.config.beta * kl  # the ELBO: no product by 1

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        model = step.model
        samples = step.z.shape[0] // step.x.shape[0]
        target = step.x.repeat(samples, 1) if samples > 1 else step.x
        recon = model.likelihood.nll(step.output, target).reshape(samples, -1).mean(0)
        kl = self.kl(step)
        return {"kl": kl.mean(), "neg_elbo": (recon + kl).mean(), **group_metrics(step.encoding)}

    def final_metrics(self, model, data) -> dict[str, float]:
        """``iw_nll``: -log p(x) of the test split by the importance-weighted bound with
        ``iw_samples`` draws (Burda et al. 2016), where the prior has a log density."""
        if not model.prior.has_log_prob:
            return {}
        return {"iw_nll": importance_weighted_nll(model, data.test, None, self.config.iw_samples)}


def group_metrics(code) -> dict[str, torch.Tensor]:
    """``kl.<group>``: each latent group's KL, averaged over the batch (none for one group)."""
    return {f"kl.{name}": value.mean() for name, value in code.group_kls().items()} if code.groups else {}


def _closed_form(code, prior, y) -> torch.Tensor | None:
    """KL(q || p) per example in closed form, or None where there is none (a flow's posterior
    has no ``dist``; a mixture prior has no closed form)."""
    q = code.dist
    if q is None or code.log_q is not None:
        return None
    if isinstance(q, DiagNormal):
        normal = prior.diagonal_normal(y)
        if normal is not None:
            return q.kl_to_normal(*normal)
    p = prior.distribution(y)
    return kl_analytic(q, p) if p is not None else None


@torch.no_grad()
def importance_weighted_nll(model, x, y: torch.Tensor | None, k: int, batch: int = 256, seed: int = 0) -> float:
    """-log p(x) estimated with K importance samples, nats per example, averaged over a split
    (or tensors ``x`` and ``y``)."""
    total, n = torch.zeros((), device=next(model.parameters()).device), 0
    for xb, yb in seeded_batches(model, x, y, batch, seed):
        total += -iw_log_likelihood(model, xb, yb, k).sum()
        n += xb.shape[0]
    return float(total) / n


def iw_log_likelihood(model, x: torch.Tensor, y: torch.Tensor | None, k: int) -> torch.Tensor:
    """The importance-weighted lower bound of log p(x) per example, with K samples (aepipe's
    own estimator, :func:`aepipe.evaluation.basic.importance_terms`)."""
    from aepipe.plugin import importance_terms

    return importance_terms(model, x, y, k)[0]
