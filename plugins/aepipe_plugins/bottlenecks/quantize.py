"""The ``quantized`` bottleneck: the encoder's code, cut into ``groups`` vectors of width D,
each replaced by its nearest codeword of a K x D codebook.

Conventions (van den Oord et al. 2017, "Neural Discrete Representation Learning"):

- the decoder sees the nearest codewords; gradients pass to the encoder unchanged (the
  straight-through estimator: z_q = z_e + sg[e - z_e]);
- ``penalty.codebook`` = ||sg[z_e] - e||^2 and ``penalty.commitment`` = beta ||z_e - sg[e]||^2,
  each summed over the code's width and averaged over the batch (the reconstruction term is a
  sum over input dimensions too); with ``ema = true`` the codebook follows moving averages of
  the encoder outputs assigned to it instead (no codebook loss);
- codebook perplexity = exp(entropy of the average use of the K codewords over a split's codes,
  every group's index counted), between 1 (one codeword) and K (all used equally).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from aepipe.plugin import Bottleneck, Code, ComponentConfig, ConfigError, Encoding, ModelSpec, require

#: additive smoothing of the moving-average cluster sizes (Laplace), as in the paper's appendix
EPS = 1e-5


def _world() -> int:
    """The number of processes training this model together (1 without torch.distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sum_over_processes(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the processes, in place: every process then updates alike."""
    if _world() > 1:
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t)


def _from_first_process(tensor: torch.Tensor) -> None:
    """Replace ``tensor`` by the first process's, in place."""
    if _world() > 1:
        import torch.distributed as dist

        dist.broadcast(tensor, src=0)


class QuantizedConfig(ComponentConfig):
    """``codebook_size``: K codewords; ``groups``: the code (width ``model.code_dim``) is cut
    into this many vectors of width D = code_dim / groups, each quantized on its own to a
    codeword of the one shared K x D codebook; ``beta``: weight of the commitment loss;
    ``init``: ``data`` (the codebook starts as encoder outputs of the first training batch) or
    ``uniform`` (U(-1/K, 1/K), the paper's); ``ema``: update the codebook by exponential moving averages with
    ``decay`` after
    every optimizer step, instead of by its loss; ``codebook_lr``: the codebook's own learning
    rate (default: the run's; not with ``ema``); ``dead_after``: a codeword that no input chose
    for this many training steps restarts at an encoder output of the latest batch (0: never)."""

    codebook_size: int = Field(64, ge=2, le=65_536, description="K, the codewords")
    groups: int = Field(1, ge=1, le=4096,
                        description="indices per input: the code is cut into this many slices of width code_dim / "
                                    "groups")
    beta: float = Field(0.25, ge=0.0, description="weight of the commitment loss")
    init: Literal["data", "uniform"] = Field(
        "data",
        description="the codebook's start: encoder outputs of the first training batch, or U(-1/K, 1/K) (the paper's)",
    )
    ema: bool = Field(
        False, description="update the codebook by moving averages after each optimizer step (no codebook loss)"
    )
    decay: float = Field(0.99, gt=0.0, lt=1.0, description="decay of the moving averages (ema)")
    codebook_lr: float | None = Field(
        None, gt=0.0, description="the codebook's own learning rate (default: train.lr; not with ema)"
    )
    dead_after: int = Field(
        0,
        ge=0,
        description="training steps without a use after which a codeword restarts at a recent encoder "
        "output (0: never)",
    )


class Quantized(Bottleneck):
    """Vector quantization: each of ``groups`` slices of the code becomes its nearest codeword
    of a K x D codebook (straight-through gradients, codebook and commitment losses, optional
    EMA codebook and dead-codeword restarts). ``encode --what indices`` gives the (n, groups)
    codeword indices in [0, K); per epoch it logs ``val_codebook_perplexity`` and
    ``val_codebook_used``."""

    name = "quantized"
    Config = QuantizedConfig
    what = ("indices",)
    discrete = True
    support = "codewords"
    loss_names = ("codebook", "commitment")
    #: the conformance suite checks the moving-average codebook, the vq-vae variant's default: a
    #: codebook trained by its loss under the suite's plain Adam steps raises the loss (figures:
    #: docs/variants.md, "The quantized bottleneck under the conformance suite")
    conformance = {"model": {"encoder": {"name": "conv", "channels": [16, 32]},
                             "decoder": {"name": "conv", "channels": [32, 16]},
                             "bottleneck": {"name": "quantized", "codebook_size": 16, "groups": 4, "ema": True}}}

    def __init__(self, config: QuantizedConfig, spec: ModelSpec):
        super().__init__(config, spec)
        k, g = config.codebook_size, config.groups
        require(spec.code_dim % g == 0, f"model.code_dim = {spec.code_dim} is not divisible by groups = {g}: "
                                        f"each group is a slice of width code_dim / groups")
        require(not (config.ema and config.codebook_lr is not None),
                "codebook_lr has no effect with ema = true (the codebook follows moving averages, not the optimizer)")
        self.dim = spec.code_dim // g
        start = torch.empty(k, self.dim).uniform_(-1.0 / k, 1.0 / k)
        if config.ema:
            self.register_buffer("codebook", start)
            self.register_buffer("cluster_size", torch.ones(k))  # as if each codeword held one input: itself
            self.register_buffer("embed_sum", start.clone())
        else:
            self.codebook = torch.nn.Parameter(start)
        self.register_buffer("initialized", torch.tensor(config.init != "data"))
        self.register_buffer("idle_steps", torch.zeros(k, dtype=torch.long))  # training steps since each was chosen
        self._latest: tuple[torch.Tensor, torch.Tensor] | None = None  # the last training batch, for after_step

    def setup(self, model) -> None:
        encoder = model.encoder
        stochastic = model.probe(features=True).dist is not None
        if stochastic:
            raise ConfigError(
                f"encoder '{encoder.name}' gives a posterior of its own (distribution = \"gaussian\"); "
                'the quantized bottleneck takes a deterministic encoding: set the encoder\'s distribution = "none"'
            )

    # --- the code --------------------------------------------------------------------------

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codeword (squared Euclidean distance) of each row of ``flat``."""
        book = self.codebook.to(flat.dtype)
        distance = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1)[None]
        return distance.argmin(1)

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        z_e = encoding.code
        n = z_e.shape[0]
        flat = z_e.reshape(n * self.config.groups, self.dim)
        if self.training and not bool(self.initialized):
            self._initialize(flat.detach())
        with torch.no_grad():
            index = self.nearest(flat.detach().float())
        e = self.codebook[index].to(z_e.dtype).reshape(n, -1)
        losses = {"commitment": self.config.beta * (z_e - e.detach()).pow(2).sum(1).mean()}
        if not self.config.ema:
            losses["codebook"] = (z_e.detach() - e).pow(2).sum(1).mean()
        z_q = z_e + (e - z_e).detach()  # the codewords' values, the encoder's gradients
        if self.training and torch.is_grad_enabled():
            self._latest = (flat.detach().float(), index)
        return Code(z_q, z_q, losses=losses, outputs={"indices": index.reshape(n, self.config.groups)})

    def from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """The codewords of ``indices`` ``(n, groups)``, side by side: ``(n, code_dim)``."""
        indices = indices.long()
        if indices.dim() != 2 or indices.shape[1] != self.config.groups:
            raise ConfigError(
                f"indices of shape {tuple(indices.shape)}; bottleneck 'quantized' takes (n, {self.config.groups})"
            )
        return self.codebook[indices.to(self.codebook.device)].reshape(indices.shape[0], -1)

    def index_shape(self) -> tuple[int, int]:
        return (self.config.groups, self.config.codebook_size)

    # --- training ----------------------------------------------------------------------------

    def parameter_groups(self) -> list[dict]:
        if self.config.codebook_lr is None or self.config.ema:
            return []
        return [{"params": [self.codebook], "lr": self.config.codebook_lr}]

    @torch.no_grad()
    def _initialize(self, flat: torch.Tensor) -> None:
        """The codebook starts as K encoder outputs of the first training batch, evenly spread
        over it (no random draw: the same batch gives the same codebook; a batch of fewer rows
        repeats them, and the duplicates restart with ``dead_after``)."""
        k, n = self.config.codebook_size, len(flat)
        rows = torch.arange(k, device=flat.device) * n // k if n >= k else torch.arange(k, device=flat.device) % n
        self.codebook.data.copy_(flat[rows].to(self.codebook.dtype))
        _from_first_process(self.codebook.data)  # on several processes: the first one's batch
        if self.config.ema:
            self.embed_sum.copy_(self.codebook)
            self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def after_step(self) -> None:
        """The moving averages (``ema``) and restarts of idle codewords (``dead_after``), from the
        batch of the step just taken (on several processes: the counts and sums of every
        process's shard, and the first process's draw of restarts, so all keep one codebook)."""
        if self._latest is None:
            return
        flat, index = self._latest
        self._latest = None
        c = self.config
        k = c.codebook_size
        book = self.codebook.data
        counts = torch.bincount(index, minlength=k).to(book.dtype)
        sums = torch.zeros_like(book).index_add_(0, index, flat.to(book.dtype)) if c.ema else None
        _sum_over_processes(*(counts, sums) if c.ema else (counts,))  # on several processes: every shard's batch
        if c.ema:
            self.cluster_size.mul_(c.decay).add_(counts, alpha=1 - c.decay)
            self.embed_sum.mul_(c.decay).add_(sums, alpha=1 - c.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + EPS) / (total + k * EPS) * total
            book.copy_(self.embed_sum / smoothed[:, None])
        self.idle_steps.add_(1).masked_fill_(counts > 0, 0)
        if c.dead_after:
            dead = (self.idle_steps >= c.dead_after).nonzero().squeeze(1)
            if len(dead):
                fresh = flat[torch.randint(len(flat), (len(dead),), device=flat.device)].to(book.dtype)
                _from_first_process(fresh)
                book[dead] = fresh
                if c.ema:
                    self.embed_sum[dead] = fresh
                    self.cluster_size[dead] = 1.0
                self.idle_steps[dead] = 0

    # --- metrics -----------------------------------------------------------------------------

    def usage(self, model, split) -> dict[str, torch.Tensor]:
        """``codebook_perplexity`` and ``codebook_used`` of the codes of ``split`` (see the
        module's docstring)."""
        return codebook_usage(model, split, self.config.codebook_size)

    def epoch_metrics(self, model, split) -> dict[str, torch.Tensor]:
        return self.usage(model, split)

    def final_metrics(self, model, data) -> dict[str, torch.Tensor]:
        return self.usage(model, data.test)


def codebook_usage(model, split, size: int) -> dict[str, torch.Tensor]:
    """``codebook_perplexity`` (exp of the entropy of the average use of the ``size`` codewords,
    every position's index counted) and ``codebook_used`` (codewords chosen at least once) of the
    codes of ``split``."""
    from aepipe.plugin import code_tensor

    index = code_tensor(model, split, what="indices").reshape(-1).long()
    counts = torch.bincount(index, minlength=size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codebook_perplexity": entropy.exp(), "codebook_used": (counts > 0).sum().double()}
