"""Quantized bottlenecks built on lucidrains' ``vector-quantize-pytorch``: ``fsq`` (finite
scalar quantization, Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple") and
``residual-vq`` (residual vector quantization: Q codebooks, each quantizing what the ones before
left; Zeghidour et al. 2021, SoundStream).

Conventions:

- ``fsq``: each of the code's ``groups`` slices has ``len(levels)`` dimensions; dimension i is
  bounded (tanh) and rounded to one of ``levels[i]`` values in [-1, 1] (straight-through
  gradients). The implicit codebook is the grid of prod(levels) points: nothing is learned, no
  loss term, no codeword can die;
- ``residual-vq``: the whole code is one vector; stage 1 quantizes it, stage s the residual of
  stages 1..s-1; the decoder sees the sum of the Q codewords. Codebooks follow exponential moving
  averages (the library's default), updated after each optimizer step from that step's batch,
  optionally start at k-means centres of the first batch, and
  ``penalty.commitment`` is beta times the library's commitment loss (mean squared distance of
  each stage's input to its codeword, summed over the stages);
- both log ``codebook_perplexity`` and ``codebook_used`` (as the ``quantized`` bottleneck,
  every position's index counted; for ``residual-vq`` every stage's); ``residual-vq`` also logs
  ``stage_<s>_nll`` on the test split: the reconstruction loss (the likelihood's negative log,
  per input) when the decoder sees the sum of the first s stages' codewords only.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator

from aepipe.plugin import Bottleneck, Code, ComponentConfig, ConfigError, Encoding, ModelSpec, batches, require

from aepipe_plugins.bottlenecks.quantize import codebook_usage


def _deterministic_encoder(model, name: str) -> None:
    if model.probe(features=True).dist is not None:
        raise ConfigError(f"encoder '{model.encoder.name}' gives a posterior of its own (distribution = \"gaussian\"); "
                          f"the {name} bottleneck takes a deterministic encoding: set the encoder's distribution = "
                          "\"none\"")


class FSQConfig(ComponentConfig):
    """``levels``: the values each dimension of a slice is rounded to (the paper's 8-5-5-5 gives
    a 1000-point grid; each at least 3, as the library requires symmetric levels otherwise);
    ``groups``: the code is cut into this many slices of width len(levels), each quantized on
    its own (model.code_dim = groups x len(levels))."""

    levels: list[int] = Field([8, 5, 5, 5], min_length=1, max_length=16,
                              description="levels of each dimension of a slice (each 3 to 1024); the grid has "
                                          "prod(levels) points")
    groups: int = Field(1, ge=1, le=4096, description="slices of the code, each of width len(levels), each one index")

    @field_validator("levels")
    @classmethod
    def _levels(cls, levels: list[int]) -> list[int]:
        if any(not 3 <= level <= 1024 for level in levels):
            raise ValueError(f"levels {levels}: each must be 3 to 1024 (the library needs symmetric levels below 3)")
        return levels


class FSQBottleneck(Bottleneck):
    """Finite scalar quantization: each of ``groups`` slices of the code is bounded and rounded,
    dimension by dimension, to a fixed grid of prod(levels) points (straight-through gradients; no
    codebook to learn, no loss). ``encode --what indices`` gives the (n, groups) grid indices."""

    name = "fsq"
    Config = FSQConfig
    what = ("indices",)
    discrete = True
    support = "grid"
    conformance = {"model": {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]},
                             "code_dim": 6, "bottleneck": {"name": "fsq", "levels": [5, 4, 3], "groups": 2}}}
    conformance_settings = ({"levels": [3, 3, 3, 3, 3, 3], "groups": 1},)

    def __init__(self, config: FSQConfig, spec: ModelSpec):
        from vector_quantize_pytorch import FSQ

        super().__init__(config, spec)
        width = len(config.levels)
        require(spec.code_dim == config.groups * width, f"model.code_dim = {spec.code_dim}, but groups x len(levels) = "
                                                        f"{config.groups} x {width} = {config.groups * width}: set "
                                                        "them to agree")
        self.size = math.prod(config.levels)
        require(self.size <= 2 ** 31, f"levels {config.levels} make a grid of {self.size} points; at most 2^31")
        self.fsq = FSQ(list(config.levels))

    def setup(self, model) -> None:
        _deterministic_encoder(model, "fsq")

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        n = encoding.code.shape[0]
        codes, indices = self.fsq(encoding.code.reshape(n, self.config.groups, -1))
        z = codes.reshape(n, -1)
        return Code(z, z, outputs={"indices": indices.long()})

    def from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """The grid points of ``indices`` ``(n, groups)``, side by side: ``(n, code_dim)``."""
        if indices.dim() != 2 or indices.shape[1] != self.config.groups:
            raise ConfigError(f"indices of shape {tuple(indices.shape)}; bottleneck 'fsq' takes (n, "
                              f"{self.config.groups})")
        codes = self.fsq.indices_to_codes(indices.long().to(self.fsq._basis.device))
        return codes.reshape(indices.shape[0], -1).to(torch.get_default_dtype())

    def index_shape(self) -> tuple[int, int]:
        return (self.config.groups, self.size)

    def epoch_metrics(self, model, split) -> dict[str, torch.Tensor]:
        return codebook_usage(model, split, self.size)

    def final_metrics(self, model, data) -> dict[str, torch.Tensor]:
        return codebook_usage(model, data.test, self.size)


class ResidualVQConfig(ComponentConfig):
    """``stages``: Q codebooks, each quantizing the residual the ones before left;
    ``codebook_size``: K codewords in each; ``beta``: weight of the commitment loss; ``decay``
    of the codebooks' moving averages; ``kmeans_init``: the codebooks start at k-means centres of
    the first training batch (else at random); ``dead_ratio``: a codeword whose moving-average
    use falls below this share of the mean use restarts at an input of the batch (0: never);
    ``seed``: of the k-means start, which the first batch the bottleneck sees gives (drawn aside,
    so the same batch gives the same codebooks whenever it comes)."""

    stages: int = Field(4, ge=1, le=64, description="Q, the residual stages (codebooks)")
    codebook_size: int = Field(32, ge=2, le=65_536, description="K, the codewords of each stage")
    beta: float = Field(0.25, ge=0.0, description="weight of the commitment loss")
    decay: float = Field(0.99, gt=0.0, lt=1.0, description="decay of the codebooks' moving averages")
    kmeans_init: bool = Field(True, description="start each codebook at k-means centres of the first training batch")
    seed: int = Field(0, ge=0,
                      description="seed of the codebooks' k-means start (drawn aside from the run's random stream)")
    dead_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="share of the mean moving-average use under which a "
                                                                "codeword restarts (0: never)")


class ResidualVQBottleneck(Bottleneck):
    """Residual vector quantization: the code is quantized by Q codebooks in turn, each on what
    the ones before left, and the decoder sees the sum of the Q codewords (moving-average
    codebooks, commitment loss). ``encode --what indices`` gives the (n, Q) indices, stage by
    stage; the test split's reconstruction loss after each stage is logged as ``test_stage_<s>_nll``."""

    name = "residual-vq"
    Config = ResidualVQConfig
    what = ("indices",)
    discrete = True
    support = "codewords"
    loss_names = ("commitment",)
    conformance = {"model": {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]},
                             "bottleneck": {"name": "residual-vq", "stages": 3, "codebook_size": 8}}}
    conformance_settings = ({"kmeans_init": False, "stages": 1, "dead_ratio": 0.5},)

    def __init__(self, config: ResidualVQConfig, spec: ModelSpec):
        from vector_quantize_pytorch import ResidualVQ

        super().__init__(config, spec)
        c = config
        self.rvq = ResidualVQ(dim=spec.code_dim, num_quantizers=c.stages, codebook_size=c.codebook_size, decay=c.decay,
                              kmeans_init=c.kmeans_init, kmeans_iters=10, dead_code_threshold_ratio=c.dead_ratio,
                              commitment_weight=1.0)
        self.register_buffer("started", torch.tensor(False))  # whether the codebooks have seen a batch (their start)
        self._latest: torch.Tensor | None = None  # the last training batch's code, for after_step

    @torch.no_grad()
    def after_step(self) -> None:
        """The codebooks' moving averages (and restarts, ``dead_ratio``) from the batch of the step
        just taken: the library's update, run here so that the loss of a step sees the codebooks
        the step started from."""
        if self._latest is None:
            return
        latest, self._latest = self._latest, None
        self.rvq(latest[:, None, :], freeze_codebook=False)

    def setup(self, model) -> None:
        _deterministic_encoder(model, "residual-vq")

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        z_e = encoding.code
        n = z_e.shape[0]
        # the codebooks move (moving averages, restarts) in training steps only, not in a no-grad pass
        if bool(self.started):
            quantized, indices, commitment = self.rvq(z_e[:, None, :], freeze_codebook=True)
        else:  # the k-means start: seeded aside, so that it depends on the batch only
            with torch.random.fork_rng(devices=[z_e.device] if z_e.device.type == "cuda" else []):
                torch.manual_seed(self.config.seed)
                quantized, indices, commitment = self.rvq(z_e[:, None, :], freeze_codebook=True)
            self.started.fill_(True)
        if self.training and torch.is_grad_enabled():
            self._latest = z_e.detach()
        z = quantized.reshape(n, -1).to(z_e.dtype)
        return Code(z, z, losses={"commitment": self.config.beta * commitment.sum().to(z_e.dtype)},
                    outputs={"indices": indices.reshape(n, self.config.stages).long()})

    def stage_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """The codewords of every stage of ``indices`` ``(n, Q)``: ``(Q, n, code_dim)``."""
        if indices.dim() != 2 or indices.shape[1] != self.config.stages:
            raise ConfigError(f"indices of shape {tuple(indices.shape)}; bottleneck 'residual-vq' takes (n, "
                              f"{self.config.stages})")
        codes = self.rvq.get_codes_from_indices(indices.long()[:, None, :].to(self.rvq.codebooks.device))
        return codes[:, :, 0, :]

    def from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """The sum of the Q stages' codewords of ``indices`` ``(n, Q)``: ``(n, code_dim)``."""
        return self.stage_codes(indices).sum(0)

    def index_shape(self) -> tuple[int, int]:
        return (self.config.stages, self.config.codebook_size)

    def epoch_metrics(self, model, split) -> dict[str, torch.Tensor]:
        return codebook_usage(model, split, self.config.codebook_size)

    @torch.no_grad()
    def stage_nll(self, model, split) -> list[torch.Tensor]:
        """The mean reconstruction loss (the likelihood's negative log per input) of ``split``
        when the decoder sees the sum of the first s stages' codewords, for s = 1..Q."""
        was = model.training
        model.eval()
        try:
            totals, count = torch.zeros(self.config.stages, dtype=torch.float64), 0
            for x, y in batches(split, batch_size=1024):
                code = model.encode(x, y)
                partial = self.stage_codes(code.outputs["indices"]).cumsum(0).to(x.dtype)
                y1 = model.one_hot(y)
                for s in range(self.config.stages):
                    totals[s] += model.likelihood.nll(model.decoder(partial[s], y1), x).sum().double().cpu()
                count += len(x)
            return list(totals / max(count, 1))
        finally:
            model.train(was)

    def final_metrics(self, model, data) -> dict[str, torch.Tensor]:
        out = codebook_usage(model, data.test, self.config.codebook_size)
        out.update({f"stage_{s + 1}_nll": value for s, value in enumerate(self.stage_nll(model, data.test))})
        return out
