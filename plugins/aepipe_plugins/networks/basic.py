"""Encoders and decoders: one-layer, MLP and convolutional.

Every encoder ends in the shared code head (:class:`aepipe.plugin.HeadEncoder`), which gives
either a deterministic code (``distribution = "none"``) or a diagonal Gaussian
q(z | x) = N(mu, diag sigma^2) (``"gaussian"``), whose mean is the code.
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt
from torch import nn

from aepipe.plugin import (Activation, ComponentConfig, Decoder, EncoderConfig, Encoding, HeadEncoder, ModelSpec,
                           activation, conv_sizes, require)


class OneLayerEncoderConfig(EncoderConfig):
    """``activation``: g in h = g(W1 x + b1); ``identity`` for the linear autoencoder."""

    activation: Activation = "sigmoid"


class OneLayerEncoder(HeadEncoder):
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


class MLPEncoder(HeadEncoder):
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


class ConvEncoder(HeadEncoder):
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
        hs, ws = conv_sizes(h, len(config.channels)), conv_sizes(w, len(config.channels))
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
        hs, ws = conv_sizes(h, n), conv_sizes(w, n)
        self.start = (config.channels[0], hs[-1], ws[-1])
        self.fc = nn.Sequential(
            nn.Linear(self.in_features, config.channels[0] * hs[-1] * ws[-1]), activation(config.activation)
        )
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
