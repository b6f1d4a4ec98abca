"""Bottlenecks of latent hierarchies: the Ladder VAE's (Sønderby et al. 2016) and the top-down
hierarchy of NVAE/VDVAE (Vahdat & Kautz 2020, Child 2021), and the ``hierarchical`` prior that
draws and scores codes through either bottleneck's top-down path.

Each returns a :class:`Code` of latent groups ``z1`` (bottom) ... ``zL`` (top), each with its
draws, posterior log-density, conditional prior term log p(z_i | z_(i+1)...) and closed-form
KL given its parents' draws, so that the KL regularizer, the importance-weighted bound and the
likelihood metrics work on the joint latent and log each group's KL (``val_kl.z1``...).
The deterministic code (``code``, what ``encode`` writes) is the ancestral pass through the
posteriors' means. Both log each group's KL in training as ``diag.kl.<group>``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from aepipe.plugin import Bottleneck, Code, ConfigError, Encoding, Group, ModelSpec, Prior, require
from aepipe_plugins.networks.hierarchy import HierarchyConfig, LadderConfig, _mlp

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _gaussian(raw: torch.Tensor, min_std: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of a diagonal Gaussian from ``raw`` = [mean, log-variance]."""
    mu, logvar = raw.chunk(2, dim=-1)
    return mu, torch.exp(0.5 * logvar.clamp(-12.0, 8.0)) + min_std


def _log_normal(z: torch.Tensor, mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - mu) / std).pow(2) - std.log() - HALF_LOG_2PI).sum(-1)


def _kl_normal(mu_q, std_q, mu_p, std_p) -> torch.Tensor:
    return (std_p.log() - std_q.log() + (std_q.pow(2) + (mu_q - mu_p).pow(2)) / (2 * std_p.pow(2)) - 0.5).sum(-1)


def _groups_of(spec: ModelSpec, dims: list[int]) -> tuple[tuple[str, int], ...]:
    if sum(dims) != spec.code_dim:
        raise ConfigError(f"dims {list(dims)} add up to {sum(dims)}, not model.code_dim = {spec.code_dim}")
    return tuple((f"z{i}", d) for i, d in reversed(list(enumerate(dims, 1))))


class _Hierarchy(Bottleneck):
    """What both hierarchies share: the draws in blocks (block 0 the posterior means' ancestral
    pass, the ``code``; blocks 1..L the draws), the groups' assembly, and the prior's side."""

    what = ("sample",)

    def _noise(self, m: int, n: int, width: int, like: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(m * n, width, device=like.device, dtype=like.dtype)
        eps[:n] = 0.0  # block 0: the means
        return eps

    def _group(self, n: int, z, mu_q, std_q, mu_p, std_p, samples: int, given: tuple[str, ...]) -> Group:
        zs, mq, sq, mp, sp = (t[n:] for t in (z, mu_q, std_q, mu_p, std_p))
        return Group(zs, z[:n], log_q=_log_normal(zs, mq, sq).reshape(samples, n),
                     log_p=_log_normal(zs, mp, sp).reshape(samples, n),
                     kl=_kl_normal(mq, sq, mp, sp).reshape(samples, n), given=given)

    def _code(self, n: int, samples: int, groups: dict[str, Group]) -> Code:
        ordered = [groups[name] for name, _ in self.spec.groups]
        z = torch.cat([g.z for g in ordered], dim=-1)
        log_q = torch.stack([g.log_q for g in ordered]).sum(0)
        log_p = torch.stack([g.log_p for g in ordered]).sum(0)
        diagnostics = {f"kl.{name}": g.kl.mean() for name, g in groups.items()}
        return Code(torch.cat([g.code for g in ordered], dim=-1), z, samples, log_q=log_q, log_p=log_p,
                    outputs={"sample": z[:n]}, groups={name: groups[name] for name, _ in self.spec.groups},
                    diagnostics=diagnostics)

    def prior_sample(self, n: int) -> torch.Tensor:  # pragma: no cover - each hierarchy's own
        raise NotImplementedError

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class LadderBottleneckConfig(LadderConfig):
    """The ladder's ``hidden`` and ``dims`` (as its encoder's); ``min_std`` floors every
    standard deviation."""

    min_std: float = Field(1e-3, gt=0.0)


class LadderBottleneck(_Hierarchy):
    """The Ladder VAE's inference: the top group's posterior from the encoder's code, each lower
    group's q(z_i | .) the precision-weighted merge of the bottom-up estimate (a linear head on
    the encoder's feature ``d<i>``) and the top-down prior p(z_i | z_(i+1)) (an MLP of the group
    above); p(z_L) = N(0, I). The decoder sees z1 (the ``ladder`` decoder)."""

    name = "ladder"
    Config = LadderBottleneckConfig
    conformance = {"variant": "ladder-vae"}

    @classmethod
    def features(cls, config: LadderBottleneckConfig, spec: ModelSpec) -> int:
        return 2 * config.dims[-1]

    @classmethod
    def groups(cls, config: LadderBottleneckConfig, spec: ModelSpec) -> tuple[tuple[str, int], ...]:
        if len(config.dims) != len(config.hidden):
            raise ConfigError(f"dims {list(config.dims)} and hidden {list(config.hidden)} need one entry per group "
                              "each")
        return _groups_of(spec, config.dims)

    def __init__(self, config: LadderBottleneckConfig, spec: ModelSpec):
        super().__init__(config, spec)
        dims, hidden = config.dims, config.hidden
        self.up = nn.ModuleList(nn.Linear(hidden[i], 2 * dims[i]) for i in range(len(dims) - 1))
        self.down = nn.ModuleList(
            nn.Sequential(_mlp([dims[i + 1], hidden[i], hidden[i]], config.activation),
                          nn.Linear(hidden[i], 2 * dims[i]))
            for i in range(len(dims) - 1))

    def setup(self, model) -> None:
        got = model.probe(features=True).features or {}
        for i, width in enumerate(self.config.hidden[:-1], 1):
            shape = tuple(got[f"d{i}"].shape) if f"d{i}" in got else None
            require(shape == (1, width), f"needs the encoder's feature d{i} of width {width} (a ladder encoder with "
                                         f"the same hidden); encoder '{model.encoder.name}' gives "
                                         f"{sorted(got) or 'none'}")

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        dims, floor = self.config.dims, self.config.min_std
        n, m, top = encoding.code.shape[0], samples + 1, len(dims)
        mu, std = (t.repeat(m, 1) for t in _gaussian(encoding.code, floor))
        z = mu + std * self._noise(m, n, dims[-1], mu)
        groups = {f"z{top}": self._group(n, z, mu, std, torch.zeros_like(mu), torch.ones_like(std), samples, ())}
        for i in range(top - 2, -1, -1):  # z_(i+1) given z_(i+2)
            mu_p, std_p = _gaussian(self.down[i](z), floor)
            mu_u, std_u = (t.repeat(m, 1) for t in _gaussian(self.up[i](encoding.features[f"d{i + 1}"]), floor))
            prec_u, prec_p = std_u.pow(-2), std_p.pow(-2)
            var = 1.0 / (prec_u + prec_p)
            mu_q, std_q = (mu_u * prec_u + mu_p * prec_p) * var, var.sqrt()
            z = mu_q + std_q * self._noise(m, n, dims[i], mu_q)
            groups[f"z{i + 1}"] = self._group(n, z, mu_q, std_q, mu_p, std_p, samples, (f"z{i + 2}",))
        return self._code(n, samples, groups)

    def prior_sample(self, n: int) -> torch.Tensor:
        dims = self.config.dims
        z = torch.randn(n, dims[-1], device=self.up[0].weight.device)
        out = [z]
        for i in range(len(dims) - 2, -1, -1):
            mu, std = _gaussian(self.down[i](z), self.config.min_std)
            z = mu + std * torch.randn_like(mu)
            out.append(z)
        return torch.cat(out, dim=-1)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        zs = list(self.spec.split(z).values())  # the top first
        total = _log_normal(zs[0], torch.zeros_like(zs[0]), torch.ones_like(zs[0]))
        top = len(zs) - 1
        for k in range(1, len(zs)):  # zs[k] is z_(top - k + 1), given zs[k - 1]
            mu, std = _gaussian(self.down[top - k](zs[k - 1]), self.config.min_std)
            total = total + _log_normal(zs[k], mu, std)
        return total


class TopDownConfig(HierarchyConfig):
    """The hierarchy's ``width`` and ``dims`` (as its decoder's); ``min_std`` floors every
    standard deviation."""

    min_std: float = Field(1e-3, gt=0.0)


class TopDownBottleneck(_Hierarchy):
    """A top-down hierarchy (NVAE, VDVAE): from the decoder's top-down state h (its ``start``
    and ``descend``, used here, registered there), each group's prior p(z_i | z_>i) is a head on
    h (the top's N(0, I)) and its posterior q(z_i | x, z_>i) the prior's mean and log-variance
    plus a residual from [h, the encoder's feature at that depth] (the top: the encoder's
    code). Needs the ``hvae`` decoder and encoder with the same ``width`` and ``dims``."""

    name = "top-down"
    Config = TopDownConfig
    conformance = {"variant": "hvae"}

    @classmethod
    def features(cls, config: TopDownConfig, spec: ModelSpec) -> int:
        return config.width

    @classmethod
    def groups(cls, config: TopDownConfig, spec: ModelSpec) -> tuple[tuple[str, int], ...]:
        return _groups_of(spec, config.dims)

    def __init__(self, config: TopDownConfig, spec: ModelSpec):
        super().__init__(config, spec)
        w, act = config.width, config.activation
        top_first = [width for _, width in spec.groups] or list(reversed(config.dims))
        self.priors = nn.ModuleList(nn.Sequential(_mlp([w, w], act), nn.Linear(w, 2 * d)) for d in top_first[1:])
        self.posteriors = nn.ModuleList(nn.Sequential(_mlp([2 * w, w], act), nn.Linear(w, 2 * d)) for d in top_first)
        for head in [*self.priors, *self.posteriors]:  # start each group at its prior: q = p
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def setup(self, model) -> None:
        decoder = self.use(model, "decoder")
        require(hasattr(decoder, "start") and hasattr(decoder, "descend"),
                f"needs a top-down decoder (hvae); decoder '{decoder.name}' has no top-down path")
        got = model.probe(features=True).features or {}
        need = [f"e{i}" for i in range(1, len(self.config.dims))]
        require(all(k in got and got[k].shape[-1] == self.config.width for k in need),
                f"needs the encoder's features {', '.join(need)} of width {self.config.width} (the hvae encoder with "
                f"the same width and dims); encoder '{model.encoder.name}' gives {sorted(got) or 'none'}")

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        decoder, floor = self.shared("decoder"), self.config.min_std
        n, m = encoding.code.shape[0], samples + 1
        names = [name for name, _ in self.spec.groups]
        h = decoder.start(m * n)
        groups = {}
        for depth, name in enumerate(names):
            below = encoding.code if depth == 0 else encoding.features[f"e{len(names) - depth}"]
            if depth == 0:  # p(z_L) = N(0, I)
                raw_p = torch.zeros(m * n, 2 * self.spec.groups[0][1], device=h.device, dtype=h.dtype)
                mu_p, std_p = raw_p[:, ::2], torch.ones_like(raw_p[:, ::2])
            else:
                raw_p = self.priors[depth - 1](h)
                mu_p, std_p = _gaussian(raw_p, floor)
            mu_q, std_q = _gaussian(raw_p + self.posteriors[depth](torch.cat([h, below.repeat(m, 1)], dim=-1)), floor)
            z = mu_q + std_q * self._noise(m, n, mu_q.shape[1], mu_q)
            groups[name] = self._group(n, z, mu_q, std_q, mu_p, std_p, samples, tuple(names[:depth]))
            h = decoder.descend(depth, h, z)
        return self._code(n, samples, groups)

    def prior_sample(self, n: int) -> torch.Tensor:
        decoder = self.shared("decoder")
        h, out = decoder.start(n), []
        for depth, (_, width) in enumerate(self.spec.groups):
            if depth == 0:
                z = torch.randn(n, width, device=h.device)
            else:
                mu, std = _gaussian(self.priors[depth - 1](h), self.config.min_std)
                z = mu + std * torch.randn_like(mu)
            out.append(z)
            h = decoder.descend(depth, h, z)
        return torch.cat(out, dim=-1)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        decoder = self.shared("decoder")
        h = decoder.start(z.shape[0])
        total = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for depth, zi in enumerate(self.spec.split(z).values()):
            if depth == 0:
                mu, std = torch.zeros_like(zi), torch.ones_like(zi)
            else:
                mu, std = _gaussian(self.priors[depth - 1](h), self.config.min_std)
            total = total + _log_normal(zi, mu, std)
            h = decoder.descend(depth, h, zi)
        return total


class HierarchicalPrior(Prior):
    """p(z) of a latent hierarchy: draws ancestrally and scores through the bottleneck's
    top-down path (``ladder``, ``top-down``), which it uses (registered there, once)."""

    name = "hierarchical"

    def setup(self, model) -> None:
        bottleneck = self.use(model, "bottleneck")
        require(isinstance(bottleneck, _Hierarchy), f"needs a hierarchical bottleneck (ladder, top-down); "
                                                    f"bottleneck '{bottleneck.name}' has no top-down prior")

    def sample(self, n: int, y=None) -> torch.Tensor:
        return self.shared("bottleneck").prior_sample(n)

    def log_prob(self, z: torch.Tensor, y=None) -> torch.Tensor:
        return self.shared("bottleneck").prior_log_prob(z)
