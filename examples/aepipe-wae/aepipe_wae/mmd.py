"""lambda * MMD^2 between the batch's codes and as many prior samples."""

from __future__ import annotations

import torch
from pydantic import Field

from aepipe.plugin import ComponentConfig, ConfigError, Regularizer, mmd_rbf


class MMDConfig(ComponentConfig):
    """``lam``: weight of the MMD penalty, >= 0."""

    lam: float = Field(10.0, ge=0.0)


class MMDRegularizer(Regularizer):
    """lambda * MMD^2(q(z), p(z)) estimated on each batch (a sum of Gaussian kernels)."""

    name = "mmd"
    Config = MMDConfig

    def setup(self, model) -> None:
        if model.prior is None:
            raise ConfigError("regularizer 'mmd' needs a prior: set [model.prior] name = ...")

    def penalty(self, step) -> torch.Tensor:
        codes = step.encoding.code
        return self.config.lam * mmd_rbf(codes, step.model.prior.sample(codes.shape[0]))

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            real = step.model.prior.sample(step.x.shape[0])
        return {"prior_mmd": mmd_rbf(step.encoding.code, real)}
