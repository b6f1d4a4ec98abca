"""Prior components."""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import Field
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from aepipe.plugin import ComponentConfig, ModelSpec, Prior, require


class StandardNormal(Prior):
    """N(0, I)."""

    name = "standard-normal"

    def __init__(self, config: ComponentConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.register_buffer("loc", torch.zeros(spec.code_dim))
        self.register_buffer("scale", torch.ones(spec.code_dim))

    def distribution(self, y=None):
        return Independent(Normal(self.loc, self.scale), 1)

    def diagonal_normal(self, y=None):
        return 0.0, 1.0  # numbers: the closed-form KL skips the shift and the division

    def sample(self, n: int, y=None) -> torch.Tensor:
        return torch.randn(n, self.spec.code_dim, device=self.loc.device)

    def log_prob(self, z: torch.Tensor, y=None) -> torch.Tensor:
        return self.distribution().log_prob(z)


class MixtureConfig(ComponentConfig):
    """``components``: k; ``preset``: ``ring`` puts the k means evenly on a circle of
    ``radius`` in the first two code dimensions (the AAE paper's 10-component ring with k = 10);
    ``random`` draws them from N(0, radius^2 I) with ``seed``; ``means`` gives them explicitly
    (k lists of code_dim numbers). ``std``: each component's standard deviation.
    ``class_conditional``: component y is p(z | y) for label y (the supervised AAE).
    ``learn``: the means and each component's diagonal log-scales (starting at log ``std``)
    are parameters, trained by the main optimizer through the prior's log density (the KL
    regularizer's Monte Carlo estimate); otherwise they are fixed buffers."""

    components: int = Field(10, ge=1, le=10000)
    preset: Literal["ring", "random"] = "ring"
    radius: float = Field(4.0, gt=0.0)
    std: float = Field(0.5, gt=0.0)
    means: Optional[list[list[float]]] = None
    seed: int = 0
    class_conditional: bool = False
    learn: bool = Field(
        False, description="learn the means and each component's diagonal scales (parameters `means`, `log_scales`)"
    )


class GaussianMixture(Prior):
    """A mixture of k equally weighted Gaussians: fixed and isotropic, or learned (``learn``)."""

    name = "mixture"
    Config = MixtureConfig

    def __init__(self, config: MixtureConfig, spec: ModelSpec):
        super().__init__(config, spec)
        k, d = config.components, spec.code_dim
        if config.means is not None:
            require(len(config.means) == k and all(len(m) == d for m in config.means),
                    f"means must be {k} lists of {d} numbers (components x code_dim)")
            means = torch.tensor(config.means, dtype=torch.float32)
        elif config.preset == "ring":
            require(d >= 2, "the ring preset needs code_dim >= 2")
            angles = 2 * math.pi * torch.arange(k) / k
            means = torch.zeros(k, d)
            means[:, 0], means[:, 1] = config.radius * torch.cos(angles), config.radius * torch.sin(angles)
        else:
            gen = torch.Generator().manual_seed(config.seed)
            means = config.radius * torch.randn(k, d, generator=gen)
        if config.learn:
            self.means = nn.Parameter(means)
            self.log_scales = nn.Parameter(torch.full((k, d), math.log(config.std)))
        else:  # fixed: these two buffers are what runs stored before ``learn`` existed hold
            self.register_buffer("means", means)
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.class_conditional = config.class_conditional
        if config.class_conditional:
            require(
                spec.n_classes == k,
                f"class_conditional needs one component per class: {spec.n_classes} classes, {k} components",
            )

    def scales(self) -> torch.Tensor:
        """Each component's standard deviations, shape ``(k, code_dim)``."""
        if self.config.learn:
            return self.log_scales.exp()
        return torch.full_like(self.means, self.config.std)

    def _components(self) -> Independent:
        return Independent(Normal(self.means, self.scales()), 1)

    def diagonal_normal(self, y=None):
        if y is not None and self.class_conditional:
            if self.config.learn:
                return self.means[y.long()], self.log_scales[y.long()].exp()
            return self.means[y.long()], torch.full_like(self.means[:1], self.config.std)
        return None

    def distribution(self, y=None):
        if y is not None and self.class_conditional:
            if self.config.learn:
                return Independent(Normal(self.means[y.long()], self.log_scales[y.long()].exp()), 1)
            return Independent(Normal(self.means[y.long()], self.config.std), 1)
        return MixtureSameFamily(Categorical(probs=self.weights), self._components())

    def sample(self, n: int, y=None) -> torch.Tensor:
        if y is not None and self.class_conditional:
            idx = y.long()
        else:
            idx = torch.multinomial(self.weights, n, replacement=True)
        noise = torch.randn(n, self.spec.code_dim, device=self.means.device)
        if self.config.learn:
            return self.means[idx] + self.log_scales[idx].exp() * noise
        return self.means[idx] + self.config.std * noise

    def log_prob(self, z: torch.Tensor, y=None) -> torch.Tensor:
        return self.distribution(y).log_prob(z)


class SwissRollConfig(ComponentConfig):
    """A 2-D swiss roll: angle t ~ U(``t_min``, ``t_max``) (radians), point (t cos t, t sin t)
    times ``scale``, plus N(0, ``noise``^2) in every code dimension. With labels and
    ``class_conditional``, class c draws t from the c-th of n_classes equal segments."""

    t_min: float = 1.5 * math.pi
    t_max: float = 4.5 * math.pi
    scale: float = Field(0.3, gt=0.0)
    noise: float = Field(0.05, ge=0.0)
    class_conditional: bool = False


class SwissRoll(Prior):
    """A swiss roll in the first two code dimensions (no closed-form log density)."""

    name = "swiss-roll"
    Config = SwissRollConfig
    has_log_prob = False

    def __init__(self, config: SwissRollConfig, spec: ModelSpec):
        super().__init__(config, spec)
        require(spec.code_dim >= 2, "the swiss roll needs code_dim >= 2")
        require(config.t_max > config.t_min, "t_max must exceed t_min")
        self.register_buffer("anchor", torch.zeros(()))
        self.class_conditional = config.class_conditional and spec.n_classes > 0

    def sample(self, n: int, y=None) -> torch.Tensor:
        c = self.config
        u = torch.rand(n, device=self.anchor.device)
        if y is not None and self.class_conditional:
            u = (y.float() + u) / self.spec.n_classes
        t = c.t_min + (c.t_max - c.t_min) * u
        z = c.noise * torch.randn(n, self.spec.code_dim, device=self.anchor.device)
        z[:, 0] += c.scale * t * torch.cos(t)
        z[:, 1] += c.scale * t * torch.sin(t)
        return z

    def log_prob(self, z, y=None):
        raise NotImplementedError("the swiss-roll prior has no closed-form log density")
