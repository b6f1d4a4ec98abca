"""The activation functions of sparse autoencoders, as bottlenecks over the encoder's
pre-activations: ReLU, TopK (Gao et al. 2024), BatchTopK (Bussmann et al. 2024) and JumpReLU
(Rajamanoharan et al. 2024). Each tracks its dead latents over a window of training tokens (a
latent that has not fired in ``dead_window`` tokens is dead); the AuxK loss reads them."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from pydantic import Field

from aepipe.plugin import Bottleneck, Code, ComponentConfig, ConfigError, Encoding, batches


class SparseCodeConfig(ComponentConfig):
    """``dead_window``: training tokens without firing after which a latent counts as dead."""

    dead_window: int = Field(100_000, ge=1)


class SparseCode(Bottleneck):
    """Shared by the sparse codes: the dead-latent counter and the code from the activations."""

    Config = SparseCodeConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.register_buffer("since_fired", torch.zeros(spec.code_dim, dtype=torch.float64))

    def setup(self, model) -> None:
        if model.probe(features=True).dist is not None:
            raise ConfigError(f"bottleneck '{self.name}' needs a deterministic encoder; '{model.encoder.name}' gives a "
                              "posterior")

    def activate(self, pre: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        code = self.activate(encoding.code)
        if self.training:
            with torch.no_grad():
                fired = (code != 0).any(0)
                self.since_fired.add_(code.shape[0]).mul_(~fired)
        return Code(code, code, losses=self.losses(encoding.code, code))

    def losses(self, pre: torch.Tensor, code: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def dead(self) -> torch.Tensor:
        """A boolean mask of the latents that have not fired in ``dead_window`` training tokens."""
        return self.since_fired >= self.config.dead_window

    def epoch_metrics(self, model, split) -> dict[str, torch.Tensor]:
        """``val_l0`` and ``val_fvu`` every epoch: what a ``[tune]`` over sparsity and fidelity reads."""
        return l0_and_fvu(model, split)


class ReluCode(SparseCode):
    """f = ReLU(pre-activations); sparsity comes from a penalty (``decoder-weighted-l1``)."""

    name = "relu-code"

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)


class TopKConfig(SparseCodeConfig):
    """``k``: latents kept per token (the k largest pre-activations, then a ReLU)."""

    k: int = Field(32, ge=1)


def top_k(pre: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of the k largest entries of each row, zeros elsewhere."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))


class TopKCode(SparseCode):
    """TopK (Gao et al. 2024): each token keeps its k largest pre-activations (ReLU'd)."""

    name = "topk-code"
    Config = TopKConfig

    def setup(self, model) -> None:
        super().setup(model)
        if self.config.k > self.spec.code_dim:
            raise ConfigError(f"k = {self.config.k} is more than the {self.spec.code_dim} latents (model.code_dim)")

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return top_k(pre, self.config.k)


class BatchTopKConfig(TopKConfig):
    """``threshold_decay``: the inference threshold is a moving average (this decay) of the
    smallest activation each training batch keeps."""

    threshold_decay: float = Field(0.99, ge=0.0, lt=1.0)


class BatchTopKCode(TopKCode):
    """BatchTopK (Bussmann et al. 2024): a batch of n tokens keeps its n k largest activations
    in all, so tokens differ in how many latents fire; at inference a latent fires where its
    activation exceeds one threshold, the running mean of the smallest kept activation."""

    name = "batchtopk-code"
    Config = BatchTopKConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_seen", torch.zeros((), dtype=torch.bool))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        acts = torch.relu(pre)
        if not self.training:
            return acts * (acts > self.threshold)
        flat = acts.flatten()
        values, indices = flat.topk(min(self.config.k * pre.shape[0], flat.numel()), sorted=False)
        code = torch.zeros_like(flat).scatter_(0, indices, values).reshape(pre.shape)
        with torch.no_grad():
            kept = torch.where(values > 0, values, torch.full_like(values, float("inf"))).min()
            kept = torch.where(torch.isfinite(kept), kept, self.threshold)
            d = self.config.threshold_decay
            new = torch.where(self.threshold_seen, d * self.threshold + (1 - d) * kept, kept)
            self.threshold.copy_(new)
            self.threshold_seen.fill_(True)
        return code


class JumpReluConfig(SparseCodeConfig):
    """``threshold``: the thresholds' starting value; ``bandwidth``: the straight-through
    estimator's kernel width; ``l0``: the penalty's weight; ``target_l0``: where set, the
    penalty is l0 * (L0 / target_l0 - 1)^2 (pulls the mean L0 to the target) instead of l0 * L0.
    The defaults suit inputs of unit mean squared norm (``normalize``), where pre-activations start
    near 0.025; Rajamanoharan et al.'s 0.001 did not move in a short run (docs/variants.md)."""

    threshold: float = Field(0.06, gt=0.0)
    bandwidth: float = Field(0.02, gt=0.0)
    l0: float = Field(1.0, ge=0.0)
    target_l0: Optional[float] = Field(None, gt=0.0)


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """z H(z - theta); d/dtheta by the straight-through estimator -(theta / eps) K((z - theta) / eps)."""

    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta)

    @staticmethod
    def backward(ctx, grad):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        dz = grad * (z > theta)
        dtheta = (grad * -(theta / eps) * _rectangle((z - theta) / eps)).sum(0)
        return dz, dtheta, None


class _Step(torch.autograd.Function):
    """H(z - theta); d/dtheta by the straight-through estimator -(1 / eps) K((z - theta) / eps)."""

    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        return None, (grad * -(1.0 / eps) * _rectangle((z - theta) / eps)).sum(0), None


class JumpReluCode(SparseCode):
    """JumpReLU (Rajamanoharan et al. 2024): a latent fires where its pre-activation passes its
    own learned threshold; the thresholds learn through a straight-through estimator, under an
    L0 penalty (``penalty.l0``)."""

    name = "jumprelu-code"
    Config = JumpReluConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.log_threshold = torch.nn.Parameter(torch.full((spec.code_dim,),
                                                           float(torch.tensor(config.threshold).log())))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return _JumpReLU.apply(pre, self.log_threshold.exp(), self.config.bandwidth)

    def losses(self, pre: torch.Tensor, code: torch.Tensor) -> dict[str, torch.Tensor]:
        l0 = _Step.apply(pre, self.log_threshold.exp(), self.config.bandwidth).sum(-1).mean()
        c = self.config
        return {"l0": c.l0 * (l0 if c.target_l0 is None else (l0 / c.target_l0 - 1.0) ** 2)}


@torch.no_grad()
def l0_and_fvu(model, split, batch: int = 4096) -> dict[str, torch.Tensor]:
    """Mean latents active per row, and the fraction of variance unexplained, over ``split``
    (0-d tensors on the device: read back once with the epoch's other metrics)."""
    active = err = total = None
    sum_x, n = None, 0
    for xb, yb in batches(split, batch_size=batch):
        code = model.encode(xb, yb).code
        x, r = xb.double(), model.decode(code, model.one_hot(yb)).double()
        parts = ((code != 0).sum(dtype=torch.float64), (x - r).pow(2).sum(), x.pow(2).sum())
        active, err, total = parts if active is None else (active + parts[0], err + parts[1], total + parts[2])
        sum_x = x.sum(0) if sum_x is None else sum_x + x.sum(0)
        n += xb.shape[0]
    return {"l0": active / n, "fvu": err / (total - sum_x.pow(2).sum() / n)}


@torch.no_grad()
def firing_rates(model, split, batch: int = 4096) -> torch.Tensor:
    """Each latent's share of the rows of ``split`` on which it is non-zero."""
    counts, n = None, 0
    for xb, yb in batches(split, batch_size=batch):
        fired = (model.encode(xb, yb).code != 0).sum(0, dtype=torch.float64)
        counts, n = fired if counts is None else counts + fired, n + xb.shape[0]
    return counts / max(n, 1)


def density_figure(rates: torch.Tensor, title: str = ""):
    """The latent-density histogram: log10 of each latent's firing rate (dead latents counted apart)."""
    from matplotlib.figure import Figure

    rates = rates.cpu().numpy()
    alive = rates[rates > 0]
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    if len(alive):
        ax.hist(np.log10(alive), bins=50, color="tab:blue")
    ax.axvline(-1.0, color="tab:red", lw=1, ls="--", label="dense (> 10% of tokens)")
    ax.set_xlabel("log10 firing rate")
    ax.set_ylabel("latents")
    ax.set_title(f"{title}{' ' if title else ''}{int((rates == 0).sum())} dead of {len(rates)}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


class GatedCode(SparseCode):
    """Gated SAE (Rajamanoharan et al. 2024): the encoder's pre-activations pi (the gate, with
    the encoder's bias b_gate) decide which latents fire, 1[pi > 0]; their magnitudes share the
    gate's weights, rescaled: ReLU(exp(r_mag) (pi - b_gate) + b_mag). The gate learns through
    the ``gated-penalty`` regularizer (its L1 and auxiliary reconstruction)."""

    name = "gated-code"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.r_mag = torch.nn.Parameter(torch.zeros(spec.code_dim))
        self.b_mag = torch.nn.Parameter(torch.zeros(spec.code_dim))
        self._encoder: list = []  # the encoder, unregistered: its bias is the gate's

    def setup(self, model) -> None:
        super().setup(model)
        if (not isinstance(getattr(model.encoder, "bias", None), torch.nn.Parameter)
                or model.encoder.bias.shape != self.b_mag.shape):
            raise ConfigError("bottleneck 'gated-code' needs the encoder 'sae-encoder' (its bias is the gate's); got "
                              f"'{model.encoder.name}'")
        self._encoder = [model.encoder]

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        b_gate = self._encoder[0].bias if self._encoder else 0.0
        magnitude = torch.relu(self.r_mag.exp() * (pre - b_gate) + self.b_mag)
        return (pre > 0).to(pre.dtype) * magnitude


def prefix_sizes(prefixes: list[int], width: int) -> list[int]:
    """The Matryoshka prefixes, checked: increasing, each smaller than the dictionary."""
    if sorted(set(prefixes)) != list(prefixes) or not prefixes or prefixes[0] < 1 or prefixes[-1] >= width:
        raise ConfigError(f"prefixes {list(prefixes)} must increase, from 1 to fewer than the {width} latents "
                          "(model.code_dim)")
    return list(prefixes)
