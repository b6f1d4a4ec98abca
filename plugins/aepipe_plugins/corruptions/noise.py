"""Corruptions x -> x~ (inputs in [0, 1]) and the denoising score."""

from __future__ import annotations

import torch
from pydantic import Field

from aepipe.plugin import ComponentConfig, Corruption, seeded_batches


class GaussianConfig(ComponentConfig):
    """``sigma``: standard deviation of the additive noise, >= 0; ``clip``: clip x~ to [0, 1]."""

    sigma: float = Field(0.3, ge=0.0)
    clip: bool = True


class GaussianNoise(Corruption):
    """Additive Gaussian noise: x~ = x + sigma * eps."""

    name = "gaussian"
    Config = GaussianConfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x + self.config.sigma * torch.randn_like(x)
        return noisy.clamp(0.0, 1.0) if self.config.clip else noisy


class FractionConfig(ComponentConfig):
    """``nu``: the fraction of inputs corrupted, in [0, 1]."""

    nu: float = Field(0.3, ge=0.0, le=1.0)


class Masking(Corruption):
    """Masking noise: each input is set to 0 with probability nu."""

    name = "masking"
    Config = FractionConfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.rand_like(x) >= self.config.nu)


class SaltAndPepperConfig(FractionConfig):
    """``nu``: fraction corrupted; each corrupted input becomes ``low`` or ``high`` with equal odds."""

    low: float = 0.0
    high: float = 1.0


class SaltAndPepper(Corruption):
    """Salt-and-pepper noise: a fraction nu of inputs set to the minimum or maximum at random."""

    name = "salt-and-pepper"
    Config = SaltAndPepperConfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = torch.rand_like(x) < self.config.nu
        salt = torch.rand_like(x) < 0.5
        value = torch.where(salt, torch.full_like(x, self.config.high), torch.full_like(x, self.config.low))
        return torch.where(hit, value, x)


@torch.no_grad()
def denoising_mse(model, corruption, x, y: torch.Tensor | None = None, seed: int = 0, batch: int = 4096) -> float:
    """Mean squared error between clean inputs and the reconstruction of their corruption, over
    a split (or tensors ``x`` and ``y``).

    The corruption is drawn from its own seeded generator (the same corrupted inputs every
    call), without disturbing the training random stream."""
    total, count = torch.zeros((), device=next(model.parameters()).device), 0
    for xb, yb in seeded_batches(model, x, y, batch, seed):
        total += (model(corruption(xb), yb) - xb).pow(2).sum()
        count += xb.numel()
    return float(total) / count
