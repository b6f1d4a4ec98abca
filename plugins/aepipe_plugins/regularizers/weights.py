"""L1 and L2 weight penalties.

Weights are the parameters with two or more dimensions (linear and convolution kernels).
Biases and other one-dimensional parameters are excluded by default, the usual convention,
since penalising offsets does not limit capacity; ``include_biases = true`` counts them too.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from aepipe.plugin import ComponentConfig, Regularizer


class WeightPenaltyConfig(ComponentConfig):
    """``lam``: the weight lambda (>= 0); ``include_biases``: also penalise 1-D parameters;
    ``targets``: the parts penalised (``all``, ``encoder`` or ``decoder``);
    ``near_zero``: |w| under this counts as zero in the logged share of zero weights."""

    lam: float = Field(1e-3, ge=0.0)
    include_biases: bool = False
    targets: Literal["all", "encoder", "decoder"] = "all"
    near_zero: float = Field(1e-3, gt=0.0)


class _WeightPenalty(Regularizer):
    Config = WeightPenaltyConfig
    weight_setting = "lam"

    def setup(self, model) -> None:
        parts = (
            [model.encoder, model.decoder] if self.config.targets == "all" else [getattr(model, self.config.targets)]
        )
        self._params = [p for part in parts for p in part.parameters() if self.config.include_biases or p.dim() >= 2]

    def _norm(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def penalty(self, step) -> torch.Tensor:
        return self.config.lam * self._norm()

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        flat = torch.cat([p.detach().reshape(-1) for p in self._params])
        return {
            f"{self.name}.near_zero_share": (flat.abs() < self.config.near_zero).float().mean(),
            f"{self.name}.l1_norm": flat.abs().sum(),
            f"{self.name}.l2_norm": flat.pow(2).sum().sqrt(),
        }


class WeightL1(_WeightPenalty):
    """lambda * sum |W|: drives weights to exactly zero (sparse connections)."""

    name = "weight-l1"

    def _norm(self) -> torch.Tensor:
        return torch.stack([p.abs().sum() for p in self._params]).sum()


class WeightL2(_WeightPenalty):
    """lambda * sum W^2: shrinks every weight (weight decay)."""

    name = "weight-l2"

    def _norm(self) -> torch.Tensor:
        return torch.stack([p.pow(2).sum() for p in self._params]).sum()
