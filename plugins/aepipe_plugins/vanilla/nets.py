"""Encoders and decoders: one-layer, MLP and convolutional.

Every encoder ends in a head that gives either a deterministic code (``distribution =
"none"``) or a diagonal Gaussian q(z | x) = N(mu, diag sigma^2) (``"gaussian"``), whose mean is
the code.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import Field, PositiveInt
from torch import nn
from torch.distributions import Independent, Normal

from aepipe.components import ComponentConfig, Decoder, Encoder, Encoding, ModelSpec, activation, require

Activation = Literal["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus"]


class EncoderConfig(ComponentConfig):
    """``distribution``: ``none`` for a deterministic code, ``gaussian`` for q(z|x) with a
    reparameterized sample; ``min_std`` floors the Gaussian's standard deviation; ``top_k``
    keeps only the k largest units of a deterministic code per input (a k-sparse code)."""

    distribution: Literal["none", "gaussian"] = "none"
    min_std: float = Field(1e-4, gt=0.0)
    top_k: Optional[int] = Field(None, ge=1)


CODE_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, math.inf), "softplus": (0.0, math.inf)}


class _HeadEncoder(Encoder):
    """Shared head: features -> code, or -> (mu, log sigma^2)."""

    Config = EncoderConfig

    def _make_head(self, features: int, code_activation: str) -> None:
        gaussian = self.config.distribution == "gaussian"
        require(self.config.top_k is None or not gaussian, "top_k applies to deterministic codes (distribution = 'none')")
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


class OneLayerEncoderConfig(EncoderConfig):
    """``activation``: g in h = g(W1 x + b1); ``identity`` for the linear autoencoder."""

    activation: Activation = "sigmoid"


class OneLayerEncoder(_HeadEncoder):
    """One layer, h = g(W1 x + b1) (the notes' encoder)."""

    name = "one-layer"
    Config = OneLayerEncoderConfig

    def __init__(self, config: OneLayerEncoderConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self._make_head(self.in_features, config.activation)

    @property
    def weight(self) -> torch.Tensor:
        """W1 restricted to the input columns (labels excluded), shape (code, input)."""
        return self.head.weight[: self.spec.code_dim, : self.spec.input_dim]

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor | None = None) -> Encoding:
        return self._encode(self.with_label(x, y_onehot))

    def jacobian_frobenius_sq(self, x: torch.Tensor, y_onehot: torch.Tensor | None = None) -> torch.Tensor | None:
        """Closed-form ||dh/dx||_F^2 per example for a deterministic sigmoid layer:
        sum_j (h_j (1 - h_j))^2 sum_i W_ji^2. None when no closed form applies."""
        if self.config.distribution != "none" or self.config.activation != "sigmoid":
            return None
        h = self.forward(x, y_onehot).code
        return ((h * (1 - h)) ** 2) @ self.weight.pow(2).sum(dim=1)


class MLPEncoderConfig(EncoderConfig):
    """``hidden``: widths of the hidden layers; ``activation`` between them;
    ``code_activation`` on the code; ``dropout`` after each hidden layer."""

    hidden: list[PositiveInt] = [256, 128]
    activation: Activation = "relu"
    code_activation: Activation = "identity"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


def _mlp(sizes: list[int], act: str, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation(act)]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLPEncoder(_HeadEncoder):
    """A multilayer perceptron encoder."""

    name = "mlp"
    Config = MLPEncoderConfig

    def __init__(self, config: MLPEncoderConfig, spec: ModelSpec):
        super().__init__(config, spec)
        require(all(h >= 1 for h in config.hidden), "hidden widths must be >= 1")
        self.body = _mlp([self.in_features, *config.hidden], config.activation, config.dropout)
        self._make_head(config.hidden[-1] if config.hidden else self.in_features, config.code_activation)

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor | None = None) -> Encoding:
        return self._encode(self.body(self.with_label(x, y_onehot)))


class ConvConfig(EncoderConfig):
    """``channels``: output channels of each stride-2 3x3 convolution; ``activation`` after each."""

    channels: list[PositiveInt] = [32, 64]
    activation: Activation = "relu"
    code_activation: Activation = "identity"


def _conv_sizes(size: int, layers: int) -> list[int]:
    sizes = [size]
    for _ in range(layers):
        sizes.append((sizes[-1] + 2 - 3) // 2 + 1)
    return sizes


class ConvEncoder(_HeadEncoder):
    """Stride-2 3x3 convolutions, then a linear head (labels join at the head)."""

    name = "conv"
    Config = ConvConfig

    def __init__(self, config: ConvConfig, spec: ModelSpec):
        super().__init__(config, spec)
        require(spec.image_shape is not None, "the conv encoder needs image data (the dataset gives no image_shape)")
        require(len(config.channels) >= 1, "channels must list at least one layer")
        c, h, w = spec.image_shape
        layers: list[nn.Module] = []
        for out in config.channels:
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), activation(config.activation)]
            c = out
        self.body = nn.Sequential(*layers, nn.Flatten())
        hs, ws = _conv_sizes(h, len(config.channels)), _conv_sizes(w, len(config.channels))
        self._make_head(c * hs[-1] * ws[-1] + spec.cond_dim, config.code_activation)

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor | None = None) -> Encoding:
        feats = self.body(x.reshape(x.shape[0], *self.spec.image_shape))
        return self._encode(self.with_label(feats, y_onehot))


class OneLayerDecoder(Decoder):
    """One layer, x^ = o(W2 h + b2); o is the likelihood's (sigmoid for Bernoulli)."""

    name = "one-layer"

    def __init__(self, config: ComponentConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.linear = nn.Linear(self.in_features, spec.input_dim)

    @property
    def weight(self) -> torch.Tensor:
        """W2 restricted to the code columns, shape (input, code)."""
        return self.linear.weight[:, : self.spec.code_dim]

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(self.with_label(z, y_onehot))


class MLPDecoderConfig(ComponentConfig):
    """``hidden``: widths of the hidden layers (from the code outwards); ``activation``."""

    hidden: list[PositiveInt] = [128, 256]
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class MLPDecoder(Decoder):
    """A multilayer perceptron decoder."""

    name = "mlp"
    Config = MLPDecoderConfig

    def __init__(self, config: MLPDecoderConfig, spec: ModelSpec):
        super().__init__(config, spec)
        require(all(h >= 1 for h in config.hidden), "hidden widths must be >= 1")
        self.body = _mlp([self.in_features, *config.hidden], config.activation, config.dropout)
        self.out = nn.Linear(config.hidden[-1] if config.hidden else self.in_features, spec.input_dim)

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.body(self.with_label(z, y_onehot)))


class ConvDecoderConfig(ComponentConfig):
    """``channels``: input channels of each stride-2 transposed convolution, deepest first."""

    channels: list[PositiveInt] = [64, 32]
    activation: Activation = "relu"


class ConvDecoder(Decoder):
    """A linear layer to a small feature map, then stride-2 transposed convolutions sized to
    give back exactly the input image."""

    name = "conv"
    Config = ConvDecoderConfig

    def __init__(self, config: ConvDecoderConfig, spec: ModelSpec):
        super().__init__(config, spec)
        require(spec.image_shape is not None, "the conv decoder needs image data (the dataset gives no image_shape)")
        require(len(config.channels) >= 1, "channels must list at least one layer")
        c, h, w = spec.image_shape
        n = len(config.channels)
        hs, ws = _conv_sizes(h, n), _conv_sizes(w, n)
        self.start = (config.channels[0], hs[-1], ws[-1])
        self.fc = nn.Sequential(nn.Linear(self.in_features, config.channels[0] * hs[-1] * ws[-1]), activation(config.activation))
        layers: list[nn.Module] = []
        outs = [*config.channels[1:], c]
        for i, (cin, cout) in enumerate(zip(config.channels, outs)):
            hin, win, hout, wout = hs[n - i], ws[n - i], hs[n - i - 1], ws[n - i - 1]
            pad = (hout - (2 * hin - 1), wout - (2 * win - 1))
            layers.append(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=pad))
            if i < n - 1:
                layers.append(activation(config.activation))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.fc(self.with_label(z, y_onehot)).reshape(z.shape[0], *self.start)
        return self.body(feats).reshape(z.shape[0], -1)
