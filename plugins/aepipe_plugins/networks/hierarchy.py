"""Networks of hierarchical VAEs: the Ladder VAE's bottom-up encoder and its decoder p(x | z1)
(Sønderby et al. 2016), and the residual bottom-up encoder and top-down decoder of a hierarchical
VAE in the NVAE/VDVAE style (Vahdat & Kautz 2020, Child 2021), whose decoder takes each latent
group at its own depth.

Their settings are those of the hierarchy as a whole (``hidden``/``width``, ``dims``): a preset
declares them once in ``[model.shared]`` and every component of the model reads them there.
The groups are ``z1`` (the bottom, nearest x) to ``zL`` (the top); ``spec.groups`` lists them
top first, the order they are generated in.
"""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt
from torch import nn

from aepipe.plugin import Activation, ComponentConfig, Decoder, Encoder, Encoding, ModelSpec, activation, require


class LadderConfig(ComponentConfig):
    """``hidden``: the width of each bottom-up block, the bottom first, one per latent group;
    ``dims``: each group's width, z1 (the bottom) first, summing to ``model.code_dim``;
    ``activation`` between layers."""

    hidden: list[PositiveInt] = Field([256, 128, 64], min_length=2, max_length=16)
    dims: list[PositiveInt] = Field([16, 8, 4], min_length=2, max_length=16)
    activation: Activation = "elu"


def _mlp(widths: list[int], act: str, last: bool = True) -> nn.Sequential:
    """Linear layers through ``widths``, ``act`` after each (after the last too where ``last``)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if last or i < len(widths) - 2:
            layers.append(activation(act))
    return nn.Sequential(*layers)


def _check_unconditional(spec: ModelSpec, name: str) -> None:
    require(not spec.conditional, f"'{name}' networks are unconditional: set model.conditional = false")


class LadderEncoder(Encoder):
    """The Ladder VAE's deterministic bottom-up path: blocks d_i = MLP(d_(i-1)), one per group,
    each exposed to the bottleneck as the feature ``d<i>``; the code is a linear head on the top
    block (the top group's posterior parameters with the ``ladder`` bottleneck)."""

    name = "ladder"
    Config = LadderConfig
    conformance = {"variant": "ladder-vae"}

    def __init__(self, config: LadderConfig, spec: ModelSpec):
        super().__init__(config, spec)
        _check_unconditional(spec, self.name)
        widths = [spec.input_dim, *config.hidden]
        self.blocks = nn.ModuleList(_mlp([a, b, b], config.activation) for a, b in zip(widths, widths[1:]))
        self.head = nn.Linear(config.hidden[-1], spec.code_dim)

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor | None = None) -> Encoding:
        features, h = {}, x
        for i, block in enumerate(self.blocks, 1):
            h = block(h)
            features[f"d{i}"] = h
        return Encoding(self.head(h), features=features)


class LadderDecoder(Decoder):
    """p(x | z1): an MLP from the bottom group (the Ladder VAE's generative path above z1 is
    the bottleneck's top-down prior)."""

    name = "ladder"
    Config = LadderConfig
    takes_groups = True
    conformance = {"variant": "ladder-vae"}

    def __init__(self, config: LadderConfig, spec: ModelSpec):
        super().__init__(config, spec)
        _check_unconditional(spec, self.name)
        require(bool(spec.groups), "the ladder decoder needs a code of latent groups (the ladder bottleneck)")
        width = config.hidden[0]
        self.net = nn.Sequential(_mlp([config.dims[0], width, width], config.activation),
                                 nn.Linear(width, spec.input_dim))

    def forward_groups(self, latents: dict[str, torch.Tensor], y_onehot: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(latents["z1"])


class HierarchyConfig(ComponentConfig):
    """``width``: the residual stream's width; ``dims``: each latent group's width, z1 (the
    bottom) first, summing to ``model.code_dim`` (at least two groups); ``activation`` inside
    the residual cells."""

    width: PositiveInt = 128
    dims: list[PositiveInt] = Field([8, 8, 8], min_length=2, max_length=16)
    activation: Activation = "elu"


class Residual(nn.Module):
    """x + f(x): f = Linear(act(Linear(act(x)))) (a pre-activation residual cell), its last layer
    started small (its default initialisation times 0.1) so that each cell starts near the
    identity (as VDVAE scales its cells' last layers)."""

    def __init__(self, width: int, act: str, extra: int = 0):
        super().__init__()
        self.f = nn.Sequential(activation(act), nn.Linear(width + extra, width), activation(act),
                               nn.Linear(width, width))
        with torch.no_grad():
            self.f[-1].weight.mul_(0.1)
            self.f[-1].bias.mul_(0.1)

    def forward(self, h: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return h + self.f(h if z is None else torch.cat([h, z], dim=-1))


class HierarchyEncoder(Encoder):
    """A residual bottom-up path: a stem, then one residual cell per group, each cell's output
    exposed to the bottleneck as the feature ``e<i>`` (``e1`` the bottom); the code is a linear
    head on the top cell."""

    name = "hvae"
    Config = HierarchyConfig
    conformance = {"variant": "hvae"}

    def __init__(self, config: HierarchyConfig, spec: ModelSpec):
        super().__init__(config, spec)
        _check_unconditional(spec, self.name)
        self.stem = nn.Linear(spec.input_dim, config.width)
        self.cells = nn.ModuleList(Residual(config.width, config.activation) for _ in config.dims)
        self.head = nn.Linear(config.width, spec.code_dim)

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor | None = None) -> Encoding:
        features, h = {}, self.stem(x)
        for i, cell in enumerate(self.cells, 1):
            h = cell(h)
            features[f"e{i}"] = h
        return Encoding(self.head(h), features=features)


class TopDownDecoder(Decoder):
    """The top-down path of a hierarchical VAE, which takes each latent group at its own depth:
    h_0 a learned state, h_i = h_(i-1) + f_i([h_(i-1), z_i]) from the top group down, then a
    residual cell and a linear head to the likelihood's parameters. The ``top-down``
    bottleneck computes the groups' conditional priors and posteriors from the same states
    (:meth:`start`, :meth:`descend`): it uses this decoder's modules, registered here once."""

    name = "hvae"
    Config = HierarchyConfig
    takes_groups = True
    conformance = {"variant": "hvae"}

    def __init__(self, config: HierarchyConfig, spec: ModelSpec):
        super().__init__(config, spec)
        _check_unconditional(spec, self.name)
        require(len(spec.groups) == len(config.dims), "the hvae decoder needs the latent groups of its dims "
                                                      "(the top-down bottleneck with the same dims)")
        self.h0 = nn.Parameter(torch.zeros(config.width))
        self.cells = nn.ModuleList(Residual(config.width, config.activation, width) for _, width in spec.groups)
        self.out = nn.Sequential(Residual(config.width, config.activation), activation(config.activation),
                                 nn.Linear(config.width, spec.input_dim))

    def start(self, rows: int) -> torch.Tensor:
        """The top-down state before the top group, ``(rows, width)``."""
        return self.h0.expand(rows, -1)

    def descend(self, depth: int, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The state after group ``depth`` (0: the top) added ``z`` to state ``h``."""
        return self.cells[depth](h, z)

    def forward_groups(self, latents: dict[str, torch.Tensor], y_onehot: torch.Tensor | None = None) -> torch.Tensor:
        zs = list(latents.values())
        h = self.start(zs[0].shape[0])
        for depth, z in enumerate(zs):
            h = self.descend(depth, h, z)
        return self.out(h)
