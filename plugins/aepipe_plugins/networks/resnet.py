"""Residual convolutional encoder and decoder for colour images (32x32 CIFAR-sized, 64x64
CelebA-sized, and any other size: odd sides are handled exactly).

Encoder: a 3x3 stem, then one stage per entry of ``widths``; every stage after the first halves
the height and width with a stride-2 3x3 convolution, and each stage holds ``blocks``
pre-activation residual blocks (norm, activation, 3x3 convolution, twice, added to the input).
The flattened feature map feeds the shared code head (a deterministic code or a Gaussian q(z|x);
labels join there for conditional models). The decoder mirrors it: a linear layer to the
deepest feature map, residual blocks, and nearest-neighbour upsampling with a 3x3 convolution
back to each stage's exact size.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from aepipe.plugin import (Activation, ComponentConfig, Decoder, EncoderConfig, Encoding, HeadEncoder, ModelSpec,
                           activation, conv_sizes, require)

Norm = Literal["group", "batch", "none"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, channels: int, norm: str, act: str):
        super().__init__()
        self.body = nn.Sequential(
            _norm(norm, channels), activation(act), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(norm, channels), activation(act), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetShape(ComponentConfig):
    """``widths``: channels of each stage (each after the first halves the image's sides; the
    decoder runs them deepest first); ``blocks``: residual blocks per stage; ``norm``: group
    (default: independent of the batch, so shards and small batches behave alike), batch or
    none; ``activation`` inside the blocks."""

    widths: list[PositiveInt] = Field([32, 64, 128], min_length=1, max_length=8)
    blocks: int = Field(1, ge=1, le=16)
    norm: Norm = "group"
    activation: Activation = "relu"

    def sizes(self, spec: ModelSpec, part: str) -> tuple[int, list[int], list[int]]:
        """The image's channels, and each stage's height and width (the first: the image's)."""
        require(spec.image_shape is not None, f"the resnet {part} needs image data (the dataset gives no image_shape)")
        c, h, w = spec.image_shape
        stages = len(self.widths) - 1
        return c, conv_sizes(h, stages), conv_sizes(w, stages)


class ResNetEncoderConfig(EncoderConfig, ResNetShape):
    """The shape (``widths``, ``blocks``, ``norm``, ``activation``), the code head's settings,
    and ``code_activation`` on a deterministic code."""

    code_activation: Activation = "identity"


#: the pipeline the conformance suite checks the encoder and decoder in: the resnet variant at
#: small widths (three stages, as the default's); the default's 1M parameters cost the suite
#: seconds per step and check nothing more
_CONFORMANCE = {"variant": "resnet", "model": {"encoder": {"name": "resnet", "widths": [8, 16, 16]},
                                               "decoder": {"name": "resnet", "widths": [8, 16, 16]}}}


class ResNetEncoder(HeadEncoder):
    """Residual convolutional encoder for images (see the module's description)."""

    name = "resnet"
    Config = ResNetEncoderConfig
    conformance = _CONFORMANCE

    def __init__(self, config: ResNetEncoderConfig, spec: ModelSpec):
        super().__init__(config, spec)
        c, hs, ws = config.sizes(spec, "encoder")
        widths = config.widths
        layers: list[nn.Module] = [nn.Conv2d(c, widths[0], 3, padding=1)]
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.Conv2d(widths[i - 1], width, 3, stride=2, padding=1))
            layers += [ResidualBlock(width, config.norm, config.activation) for _ in range(config.blocks)]
        layers += [_norm(config.norm, widths[-1]), activation(config.activation), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self._make_head(widths[-1] * hs[-1] * ws[-1] + spec.cond_dim, config.code_activation)

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor | None = None) -> Encoding:
        feats = self.body(x.reshape(x.shape[0], *self.spec.image_shape))
        return self._encode(self.with_label(feats, y_onehot))


class ResNetDecoderConfig(ResNetShape):
    """The shape, as the encoder's: ``widths`` from the image inwards, ``blocks``, ``norm``,
    ``activation``."""


class ResNetDecoder(Decoder):
    """Residual convolutional decoder giving back exactly the input image's shape."""

    name = "resnet"
    Config = ResNetDecoderConfig
    conformance = _CONFORMANCE

    def __init__(self, config: ResNetDecoderConfig, spec: ModelSpec):
        super().__init__(config, spec)
        c, hs, ws = config.sizes(spec, "decoder")
        widths = config.widths
        n = len(widths) - 1
        self.start = (widths[-1], hs[-1], ws[-1])
        self.fc = nn.Linear(self.in_features, widths[-1] * hs[-1] * ws[-1])
        layers: list[nn.Module] = []
        for i in range(n, -1, -1):  # the deepest stage first
            layers += [ResidualBlock(widths[i], config.norm, config.activation) for _ in range(config.blocks)]
            if i > 0:
                layers += [
                    nn.Upsample(size=(hs[i - 1], ws[i - 1]), mode="nearest"),
                    nn.Conv2d(widths[i], widths[i - 1], 3, padding=1),
                ]
        layers += [_norm(config.norm, widths[0]), activation(config.activation), nn.Conv2d(widths[0], c, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.fc(self.with_label(z, y_onehot)).reshape(z.shape[0], *self.start)
        return self.body(feats).reshape(z.shape[0], -1)
