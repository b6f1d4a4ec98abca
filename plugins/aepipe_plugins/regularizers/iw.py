"""Importance-weighted bounds as training losses: the IWAE's (Burda et al. 2016), and the
MIWAE's, CIWAE's and PIWAE's (Rainforth et al. 2018, "Tighter variational bounds are not
necessarily better"), which trade some of the IWAE bound's tightness for a better signal to the
encoder. All take the S = ``model.samples`` draws of the step, with the log weights
log w_s = log p(x | z_s) + log p(z_s) - log q(z_s | x)::

    IWAE(S)     = log mean_s w_s                               (the iw-bound regularizer)
    MIWAE(M, K) = mean_m log mean_(k in group m) w_k,  S = M K  (miwae-bound; M = S: the ELBO)
    CIWAE(beta) = beta mean_s log w_s + (1 - beta) IWAE(S)      (ciwae-bound)
    PIWAE(M, K):  the decoder (and a learned prior) on IWAE(S), the encoder on MIWAE(M, K)
                                                               (piwae-bound)
"""

from __future__ import annotations

import torch
from pydantic import Field

from aepipe.plugin import ComponentConfig, ConfigError, Regularizer, importance_weighted_bound, log_mean_exp
from aepipe_plugins.regularizers.kl import _closed_form, group_metrics, importance_weighted_nll


class IWBoundConfig(ComponentConfig):
    """``iw_samples``: K of the importance-weighted bound reported on test data
    (``test_iw_nll``); the bound trained on uses K = ``model.samples`` draws."""

    iw_samples: int = Field(
        100, ge=1, le=10000, description="K of the importance-weighted bound reported on test data (test_iw_nll)"
    )


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
            raise ConfigError(
                f"regularizer '{self.name}' needs a prior: set [model.prior] name = ... (e.g. standard-normal)"
            )
        if not model.prior.has_log_prob:
            raise ConfigError(
                f"regularizer '{self.name}' needs the prior's log density; prior '{model.prior.name}' has none"
            )
        if not model.probe().stochastic:
            raise ConfigError(f"regularizer '{self.name}' needs a stochastic code: set [model.bottleneck] name = "
                              f"\"gaussian\" (encoder '{model.encoder.name}' with bottleneck "
                              f"'{model.bottleneck.name or 'none'}' gives a deterministic code)")

    def terms(self, step) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log p(x | z), log p(z), log q(z | x))`` of the step's K draws, each ``(K, n)``."""
        model, code = step.model, step.encoding
        n, k = step.x.shape[0], code.samples
        target = step.x.repeat(k, 1) if k > 1 else step.x
        log_px = -model.likelihood.nll(step.output, target).reshape(k, n)
        y = step.y if model.prior.class_conditional else None
        if code.log_p is not None:  # the bottleneck's own prior terms (a hierarchy's conditional priors)
            return log_px, code.log_p, code.log_q_of_z()
        log_pz = model.prior.log_prob(step.z, None if y is None else y.repeat(k)).reshape(k, n)
        return log_px, log_pz, code.log_q_of_z()

    def bound(self, step) -> torch.Tensor:
        """The importance-weighted bound of log p(x) per example, shape ``(n,)``."""
        return importance_weighted_bound(*self.terms(step))

    def objective(self, log_px: torch.Tensor, log_pz: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """The bound trained on, per example ``(n,)``, from the ``(S, n)`` terms of the draws."""
        return importance_weighted_bound(log_px, log_pz, log_q)

    def penalty(self, step) -> torch.Tensor:
        log_px, log_pz, log_q = self.terms(step)
        # recon (the core's term) is -log_px.mean(): the total loss is -objective.mean()
        return log_px.mean() - self.objective(log_px, log_pz, log_q).mean()

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        log_px, log_pz, log_q = self.terms(step)
        y = step.y if step.model.prior.class_conditional else None
        code = step.encoding
        kl = (torch.stack(list(code.group_kls().values())).sum(0) if code.groups
              else _closed_form(code, step.model.prior, y))
        if kl is None:
            kl = (log_q - log_pz).mean(0)
        return {"kl": kl.mean(), "neg_elbo": (kl - log_px.mean(0)).mean(),
                "iw_bound": importance_weighted_bound(log_px, log_pz, log_q).mean(), **group_metrics(code)}

    def final_metrics(self, model, data) -> dict[str, float]:
        """``iw_nll``: -log p(x) of the test split by the importance-weighted bound with
        ``iw_samples`` draws."""
        return {"iw_nll": importance_weighted_nll(model, data.test, None, self.config.iw_samples)}


def miwae_bound(log_px: torch.Tensor, log_pz: torch.Tensor, log_q: torch.Tensor, groups: int) -> torch.Tensor:
    """MIWAE(M, K) per example ``(n,)``: the mean over M = ``groups`` groups of K = S / M
    consecutive draws of each group's importance-weighted bound."""
    log_w = log_px + log_pz - log_q  # (S, n)
    s, n = log_w.shape
    return log_mean_exp(log_w.reshape(groups, s // groups, n), 1).mean(0)


class GroupsConfig(IWBoundConfig):
    """``groups``: M, the groups the S = ``model.samples`` draws are split into (S must be a
    multiple: K = S / M draws per group; M = S gives the ELBO, M = 1 the IWAE bound);
    ``iw_samples``: K of the bound reported on test data (``test_iw_nll``)."""

    groups: int = Field(4, ge=1, le=10000, description="M: the S = model.samples draws form M groups of K = S / M")


class _Grouped(IWBound):
    def setup(self, model) -> None:
        super().setup(model)
        m, s = self.config.groups, model.samples
        if s % m:
            raise ConfigError(f"model.samples {s} is not a multiple of groups {m} (S = M x K draws: e.g. model.samples "
                              f"= {m * max(1, round(s / m))})")


class MIWAEBound(_Grouped):
    """Makes the loss -MIWAE(M, K): the mean of M importance-weighted bounds of K draws each
    (S = ``model.samples`` = M K; Rainforth et al. 2018). The encoder's gradient signal does
    not vanish as it does for the IWAE bound of all S draws, at the price of a looser bound.

    ``evaluate`` adds ``miwae_bound`` (the bound trained on: ``-val_miwae_bound`` is
    ``val_loss``) to the IWAE regularizer's ``kl``, ``neg_elbo`` and ``iw_bound`` (all S draws).
    """

    name = "miwae-bound"
    Config = GroupsConfig

    def objective(self, log_px, log_pz, log_q):
        return miwae_bound(log_px, log_pz, log_q, self.config.groups)

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        return {**super().evaluate(step), "miwae_bound": self.objective(*self.terms(step)).mean()}


class CIWAEConfig(IWBoundConfig):
    """``beta``: the ELBO's share of the CIWAE bound beta ELBO + (1 - beta) IWAE(S), in [0, 1]
    (1: the VAE's ELBO with S draws, 0: the IWAE bound); ``iw_samples``: K of the bound reported
    on test data (``test_iw_nll``)."""

    beta: float = Field(0.5, ge=0.0, le=1.0, description="the ELBO's share of beta ELBO + (1 - beta) IWAE")


class CIWAEBound(IWBound):
    """Makes the loss -CIWAE(beta) = -(beta ELBO + (1 - beta) IWAE(S)) over the S =
    ``model.samples`` draws, the ELBO estimated by the draws' mean log weight (Rainforth et al.
    2018). ``evaluate`` adds ``ciwae_bound`` (``-val_ciwae_bound`` is ``val_loss``)."""

    name = "ciwae-bound"
    Config = CIWAEConfig

    def objective(self, log_px, log_pz, log_q):
        beta = self.config.beta
        elbo = (log_px + log_pz - log_q).mean(0)
        return beta * elbo + (1 - beta) * importance_weighted_bound(log_px, log_pz, log_q)

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        return {**super().evaluate(step), "ciwae_bound": self.objective(*self.terms(step)).mean()}


class PIWAEBound(_Grouped):
    """Trains the decoder on the IWAE bound of all S = ``model.samples`` draws and the encoder
    on MIWAE(M, K) of the same draws (M = ``groups``, K = S / M; Rainforth et al. 2018).

    One loss and one backward pass give the two gradients: with ``IW`` and ``MI`` the two bounds
    computed from the step, and ``IW~``, ``MI~`` the same computed again from the draws held
    fixed (``z`` and log q detached, the decoder run once more on them), the loss is
    ``-(MI + IW~ - MI~)``. The parameters that reach the bound only through the draws (the
    encoder, the bottleneck) see only ``MI``: the MIWAE gradient. Those that log p(x, z) reaches
    with z fixed (the decoder, a learned prior) see ``MI`` and ``MI~`` with equal gradients,
    which cancel, and ``IW~``: the IWAE gradient. Its value is -IWAE(S), the decoder's bound (a
    decoder with dropout would draw its masks twice and break the cancellation).

    ``evaluate`` adds ``miwae_bound`` (the encoder's bound); ``-val_iw_bound`` is ``val_loss``.
    """

    name = "piwae-bound"
    Config = GroupsConfig

    def penalty(self, step) -> torch.Tensor:
        log_px, log_pz, log_q = self.terms(step)
        iw = importance_weighted_bound(log_px, log_pz, log_q)
        if not step.training or not torch.is_grad_enabled():  # no gradient to split: the value only
            return log_px.mean() - iw.mean()
        model, k = step.model, step.encoding.samples
        n = step.x.shape[0]
        fixed = step.z.detach()
        y1 = None if step.y_onehot is None else step.y_onehot.repeat(k, 1)
        target = step.x.repeat(k, 1) if k > 1 else step.x
        log_px_f = -model.likelihood.nll(model.decoder(fixed, y1), target).reshape(k, n)
        y = step.y if model.prior.class_conditional else None
        log_pz_f = model.prior.log_prob(fixed, None if y is None else y.repeat(k)).reshape(k, n)
        log_q_f = log_q.detach()
        groups = self.config.groups
        encoder_bound = miwae_bound(log_px, log_pz, log_q, groups)
        decoder_only = importance_weighted_bound(log_px_f, log_pz_f, log_q_f) - miwae_bound(
            log_px_f, log_pz_f, log_q_f, groups
        )
        return log_px.mean() - (encoder_bound + decoder_only).mean()

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        return {**super().evaluate(step), "miwae_bound": miwae_bound(*self.terms(step), self.config.groups).mean()}
