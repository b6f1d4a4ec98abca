"""The ``deterministic`` and ``gaussian`` bottlenecks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from aepipe.plugin import Bottleneck, Code, ComponentConfig, ConfigError, DiagNormal, Encoding, ModelSpec


class Deterministic(Bottleneck):
    """The encoder's output is the code (today's autoencoders)."""

    name = "deterministic"

    def setup(self, model) -> None:
        if model.probe(features=True).dist is not None:
            raise ConfigError(
                f"encoder '{model.encoder.name}' gives a posterior of its own (distribution = \"gaussian\"); "
                "use the gaussian bottleneck with a deterministic encoder instead"
            )

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        return Code(encoding.code, encoding.code)


class GaussianConfig(ComponentConfig):
    """``min_std``: a floor added to the posterior's standard deviation; ``logvar_range``: the
    log-variance the encoder gives is clamped to it before the exponential (for stability)."""

    min_std: float = Field(1e-4, gt=0.0, description="added to the posterior's standard deviation")
    logvar_range: tuple[float, float] = Field(
        (-30.0, 20.0), description="the encoder's log-variance is clamped to it before the exponential"
    )


class Gaussian(Bottleneck):
    """q(z | x) = N(mu, diag sigma^2) from the encoder's ``2 * code_dim`` features (mu, log
    sigma^2); the decoder sees L = ``model.samples`` reparameterized draws mu + sigma * eps.
    ``encode --what mean`` is mu (the code), ``sample`` one draw. The KL regularizer takes the
    posterior from here, in closed form against a Gaussian prior."""

    name = "gaussian"
    Config = GaussianConfig
    what = ("mean", "sample")

    @classmethod
    def features(cls, config: GaussianConfig, spec: ModelSpec) -> int:
        return 2 * spec.code_dim

    def setup(self, model) -> None:
        lo, hi = self.config.logvar_range
        if not lo < hi:
            raise ConfigError(f"logvar_range must be increasing, got {list(self.config.logvar_range)}")
        if model.probe(features=True).dist is not None:
            raise ConfigError(
                f"encoder '{model.encoder.name}' gives a posterior of its own (distribution = \"gaussian\"); "
                'with the gaussian bottleneck set the encoder\'s distribution = "none"'
            )

    def posterior(self, encoding: Encoding) -> DiagNormal:
        mu, logvar = encoding.code.chunk(2, dim=-1)
        lo, hi = self.config.logvar_range
        # hardtanh is clamp with a one-operation gradient (clamp's takes five); the two differ only
        # in the gradient at exactly lo or hi (hardtanh's is 0 there, clamp's 1)
        return DiagNormal(mu, torch.exp(0.5 * F.hardtanh(logvar, lo, hi)) + self.config.min_std)

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        q = self.posterior(encoding)
        if samples == 1:  # the same draw as below, without the reshape, the slice and a broadcast gradient
            z = q.rsample()
            return Code(q.mean, z, 1, dist=q, outputs={"mean": q.mean, "sample": z})
        n = q.mean.shape[0]
        z = q.rsample((samples,)).reshape(samples * n, -1)
        return Code(q.mean, z, samples, dist=q, outputs={"mean": q.mean, "sample": z[:n]})

