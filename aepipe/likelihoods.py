"""Decoder likelihoods p(x | z): negative log-likelihoods in nats per example, and means.

Each is a small, separately tested piece that every model composes (never re-implemented per
variant).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Likelihood:
    name = ""

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | params), summed over input dimensions: shape ``(n,)``."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x | params]: the reconstruction."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Bernoulli with logits: the binary cross-entropy, computed from logits for stability."""

    name = "bernoulli"

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params))


class Gaussian(Likelihood):
    """Gaussian with fixed standard deviation ``sigma``: squared error / (2 sigma^2) + constant."""

    name = "gaussian"

    def __init__(self, sigma: float = 1.0):
        self.sigma = sigma

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        sq = (x - params).pow(2).sum(-1)
        return 0.5 * sq / self.sigma**2 + d * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return params + self.sigma * torch.randn_like(params)


def make_likelihood(name: str, sigma: float = 1.0) -> Likelihood:
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(sigma)
    raise ValueError(f"unknown likelihood {name!r}")
