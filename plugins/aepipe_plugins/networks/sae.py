"""The linear encoder and decoder of sparse autoencoders (dictionaries).

The decoder holds the dictionary: ``weight`` ``(width, d)``, one atom per row, and the
pre-encoder bias ``bias`` ``(d,)``, which the encoder subtracts before its own affine map and the
decoder adds back (Bricken et al. 2023). With ``unit_norm`` each atom is kept at norm 1: the
gradient's component parallel to an atom is removed in the backward pass, and the atoms are
renormalised after every optimizer step. The encoder starts as the decoder's transpose; the
pre-encoder bias starts at the geometric median of a sample of the training rows
(:meth:`SaeDecoder.initialise_from_data`, called once when a fresh run starts).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from aepipe.plugin import ComponentConfig, ConfigError, Decoder, Encoder, Encoding


class SaeDecoderConfig(ComponentConfig):
    """``unit_norm``: atoms held at norm 1; ``bias_init``: the pre-encoder bias starts at the
    ``geometric_median`` or the ``mean`` of ``init_rows`` training rows, or at ``zero``."""

    unit_norm: bool = True
    bias_init: str = Field("geometric_median", pattern="^(geometric_median|mean|zero)$")
    init_rows: int = Field(4096, ge=1, le=1_000_000)


class SaeDecoder(Decoder):
    """The dictionary: x^ = z W + b, one atom per row of W (unit norm by default)."""

    name = "sae-decoder"
    Config = SaeDecoderConfig

    def __init__(self, config: SaeDecoderConfig, spec):
        super().__init__(config, spec)
        if spec.conditional:
            raise ConfigError("decoder 'sae-decoder' takes no labels (model.conditional = false)")
        weight = torch.empty(spec.code_dim, spec.input_dim)
        torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.weight = torch.nn.Parameter(weight)
        self.bias = torch.nn.Parameter(torch.zeros(spec.input_dim))
        if config.unit_norm:
            with torch.no_grad():
                self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min(1e-8))
            self.weight.register_hook(self._tangent)

    def _tangent(self, grad: torch.Tensor) -> torch.Tensor:
        """The gradient less its component along each (unit) atom."""
        w = self.weight.detach()
        return grad - (grad * w).sum(1, keepdim=True) * w

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor | None = None) -> torch.Tensor:
        return z @ self.weight + self.bias

    def after_step(self) -> None:
        if self.config.unit_norm:
            self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min(1e-8))

    def atom_norms(self) -> torch.Tensor:
        return self.weight.norm(dim=1)

    def initialise_from_data(self, model, split) -> None:
        """The pre-encoder bias at the geometric median (or mean) of the first ``init_rows`` rows."""
        if self.config.bias_init == "zero":
            return
        x = split.head(self.config.init_rows)[0].to(self.bias.device, torch.float32)
        centre = x.mean(0) if self.config.bias_init == "mean" else geometric_median(x)
        self.bias.data.copy_(centre)


def geometric_median(x: torch.Tensor, steps: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """The point minimising the summed Euclidean distances to the rows of ``x`` (Weiszfeld's
    iteration from the mean, at most ``steps`` steps or until it moves less than ``tol`` times
    the data's scale). Tested against scipy's minimiser."""
    y = x.mean(0)
    scale = float(x.std()) + 1e-12
    for _ in range(steps):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(1e-8)
        new = (w[:, None] * x).sum(0) / w.sum()
        if float((new - y).norm()) < tol * scale:
            return new
        y = new
    return y


class SaeEncoder(Encoder):
    """Pre-activations W_e (x - b) + b_e, b the decoder's pre-encoder bias (an ``sae-decoder``),
    W_e started as the decoder's transpose."""

    name = "sae-encoder"

    def __init__(self, config: ComponentConfig, spec):
        super().__init__(config, spec)
        if spec.conditional:
            raise ConfigError("encoder 'sae-encoder' takes no labels (model.conditional = false)")
        self.weight = torch.nn.Parameter(torch.empty(spec.code_dim, spec.input_dim))
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = torch.nn.Parameter(torch.zeros(spec.code_dim))
        self._decoder: list = []  # the decoder, unregistered: its parameters stay its own

    def setup(self, model) -> None:
        decoder = model.decoder
        if not isinstance(decoder, SaeDecoder):
            raise ConfigError("encoder 'sae-encoder' needs the decoder 'sae-decoder' (its pre-encoder bias); got "
                              f"'{decoder.name}'")
        if decoder.weight.shape != self.weight.shape:
            raise ConfigError(f"encoder 'sae-encoder' gives {self.weight.shape[0]} features, the decoder's dictionary "
                              f"has {decoder.weight.shape[0]} atoms (a bottleneck that asks for another width)")
        self._decoder = [decoder]
        with torch.no_grad():
            self.weight.copy_(decoder.weight)

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor | None = None) -> Encoding:
        centre = self._decoder[0].bias if self._decoder else 0.0
        return Encoding(torch.nn.functional.linear(x - centre, self.weight, self.bias))
