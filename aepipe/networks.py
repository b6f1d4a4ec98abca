"""Network building blocks shared by encoders and decoders, first-party or not: the code head
every first-party encoder ends in (:class:`HeadEncoder`, with its settings :class:`EncoderConfig`)
and the sizes of stride-2 convolutions (:func:`conv_sizes`). Part of the plugin API
(:mod:`aepipe.plugin`)."""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import Field
from torch import nn
from torch.distributions import Independent, Normal

from aepipe.components import ComponentConfig, Encoder, activation, require
from aepipe.datatypes import Encoding

Activation = Literal["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus"]


class EncoderConfig(ComponentConfig):
    """``distribution``: ``none`` for a deterministic code, ``gaussian`` for q(z|x) with a
    reparameterized sample; ``min_std`` floors the Gaussian's standard deviation; ``top_k``
    keeps only the k largest units of a deterministic code per input (a k-sparse code)."""

    distribution: Literal["none", "gaussian"] = "none"
    min_std: float = Field(1e-4, gt=0.0)
    top_k: Optional[int] = Field(None, ge=1)


CODE_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, math.inf), "softplus": (0.0, math.inf)}


class HeadEncoder(Encoder):
    """The shared code head of an encoder: features -> a deterministic code (``distribution =
    "none"``, through ``code_activation``, optionally k-sparse), or -> (mu, log sigma^2) of a
    diagonal Gaussian q(z | x) whose mean is the code. A subclass builds its body, calls
    :meth:`_make_head` with the body's output width, and returns ``self._encode(features)``."""

    Config = EncoderConfig

    def _make_head(self, features: int, code_activation: str) -> None:
        gaussian = self.config.distribution == "gaussian"
        require(
            self.config.top_k is None or not gaussian, "top_k applies to deterministic codes (distribution = 'none')"
        )
        require(
            self.config.top_k is None or self.config.top_k <= self.spec.code_dim,
            f"top_k = {self.config.top_k} exceeds code_dim = {self.spec.code_dim}",
        )
        self.head = nn.Linear(features, self.spec.code_dim * (2 if gaussian else 1))
        self.code_activation = "identity" if gaussian else code_activation
        self.code_act = activation(self.code_activation)

    def code_range(self) -> tuple[float, float] | None:
        if self.config.distribution != "none":
            return None
        return CODE_RANGES.get(self.code_activation)

    def epoch_metrics(self, model, split) -> dict[str, float]:
        """A k-sparse code (``top_k``) logs the code's statistics, as the sparse plugin's
        regularizers do: ``val_code.mean_activation``, ``val_code.near_zero_share``."""
        if self.config.top_k is None:
            return {}
        from aepipe.stats import code_statistics

        return code_statistics(model, split, prefix="code.")

    def _encode(self, feats: torch.Tensor) -> Encoding:
        out = self.head(feats)
        if self.config.distribution == "gaussian":
            mu, logvar = out.chunk(2, dim=-1)
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) + self.config.min_std
            return Encoding(mu, Independent(Normal(mu, std), 1))
        code = self.code_act(out)
        if self.config.top_k is not None and self.config.top_k < code.shape[-1]:
            keep = code.topk(self.config.top_k, dim=-1).indices
            code = code * torch.zeros_like(code).scatter_(-1, keep, 1.0)
        return Encoding(code)


def conv_sizes(size: int, layers: int) -> list[int]:
    """The side of a feature map after each of ``layers`` stride-2 3x3 convolutions with padding 1,
    starting from ``size`` (``size`` first)."""
    sizes = [size]
    for _ in range(layers):
        sizes.append((sizes[-1] + 2 - 3) // 2 + 1)
    return sizes
