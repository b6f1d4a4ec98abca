"""Sparsity penalties on the code h and code statistics."""

from __future__ import annotations

import torch
from pydantic import Field

from aepipe.plugin import NEAR_ZERO, ComponentConfig, ConfigError, Regularizer, code_statistics  # noqa: F401 - its API


class CodeStatistics:
    """Sparse components log the code's statistics on the validation split every epoch."""

    def epoch_metrics(self, model, split) -> dict[str, float]:
        return code_statistics(model, split, prefix="code.")


class ActivityL1Config(ComponentConfig):
    """``lam``: lambda in lambda * sum_j |h_j| (averaged over the batch), >= 0."""

    lam: float = Field(1e-2, ge=0.0)


class ActivityL1(CodeStatistics, Regularizer):
    """L1 penalty on the code: lambda * sum_j |h_j|."""

    name = "activity-l1"
    Config = ActivityL1Config
    weight_setting = "lam"

    def penalty(self, step) -> torch.Tensor:
        return self.config.lam * step.encoding.code.abs().sum(-1).mean()


def bernoulli_kl(rho: float, rho_hat: torch.Tensor) -> torch.Tensor:
    """KL(rho || rho_hat) between Bernoulli distributions, elementwise."""
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


class KLSparsityConfig(ComponentConfig):
    """``rho``: target mean activation, strictly between 0 and 1; ``beta``: weight, >= 0."""

    rho: float = Field(0.05, gt=0.0, lt=1.0)
    beta: float = Field(1.0, ge=0.0)


class KLSparsity(CodeStatistics, Regularizer):
    """beta * sum_j KL(rho || rho^_j), rho^_j the batch-mean activation of sigmoid unit j."""

    name = "kl-sparsity"
    Config = KLSparsityConfig
    weight_setting = "beta"

    def setup(self, model) -> None:
        bounds = model.encoder.code_range()
        if bounds != (0.0, 1.0):
            raise ConfigError(
                f"regularizer 'kl-sparsity' needs a sigmoid code in (0, 1); encoder '{model.encoder.name}' "
                f"gives {'an unbounded or stochastic code' if bounds is None else f'codes in {bounds}'} "
                "(set its activation or code_activation to sigmoid, or use activity-l1)"
            )

    def penalty(self, step) -> torch.Tensor:
        rho_hat = step.encoding.code.mean(0).clamp(1e-6, 1 - 1e-6)
        return self.config.beta * bernoulli_kl(self.config.rho, rho_hat).sum()
