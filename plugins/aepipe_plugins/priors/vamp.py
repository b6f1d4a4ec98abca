"""The VampPrior (Tomczak & Welling 2018): a mixture of the model's own posteriors at K learned
pseudo-inputs."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from aepipe.plugin import ComponentConfig, ConfigError, ModelSpec, Prior


class VampConfig(ComponentConfig):
    """``components``: K, the number of pseudo-inputs; ``init_std``: the pseudo-inputs start
    as sigmoid(N(0, init_std^2)) per input value (grey noise around 0.5)."""

    components: int = Field(50, ge=1, le=10000, description="K, the number of learned pseudo-inputs u_k")
    init_std: float = Field(
        1.0, gt=0.0, description="the pseudo-inputs start as sigmoid(N(0, init_std^2)) per input value"
    )


class VampPrior(Prior):
    """p(z) = 1/K sum_k q(z | u_k): the posterior at K learned pseudo-inputs (VampPrior).

    The pseudo-inputs are sigmoid(``logits``), so they stay in the data's [0, 1] range; they
    are parameters of the prior and train with the main optimizer, through the model's own
    encoder and bottleneck (which the prior reaches through a plain reference set in
    :meth:`setup`, not as a submodule). There is no closed form of the KL to it
    (``distribution`` and ``diagonal_normal`` are None): the KL regularizer takes its Monte
    Carlo estimate. Unconditional models only, whose bottleneck gives q(z | x) with a density
    (the ``gaussian`` bottleneck).
    """

    name = "vamp"
    Config = VampConfig

    def __init__(self, config: VampConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.logits = nn.Parameter(config.init_std * torch.randn(config.components, spec.input_dim))
        self._model: list = []

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_k, shape ``(K, input_dim)``, in [0, 1]."""
        return torch.sigmoid(self.logits)

    def setup(self, model) -> None:
        if model.spec.conditional:
            raise ConfigError(
                "the vamp prior encodes its pseudo-inputs without labels; use it with an unconditional model "
                "(model.conditional = false)"
            )
        self._model = [model]
        with torch.no_grad():
            was = model.training
            model.eval()
            try:
                code = self._posterior_code(self.pseudo_inputs[:1])
            finally:
                model.train(was)
        if code.dist is None or code.log_q is not None:
            raise ConfigError(f"the vamp prior needs a posterior q(z | x) with a density: bottleneck "
                              f"'{model.bottleneck.name or 'none'}' of encoder '{model.encoder.name}' gives none "
                              "(set [model.bottleneck] name = \"gaussian\")")

    def _posterior_code(self, u: torch.Tensor):
        if not self._model:
            raise RuntimeError("the vamp prior was not set up with its model (setup(model))")
        return self._model[0].encode(u)

    def posterior(self):
        """q(z | u_k) of every pseudo-input: batch shape ``(K,)``."""
        return self._posterior_code(self.pseudo_inputs).dist

    def log_prob(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """log p(z) = logsumexp_k log q(z | u_k) - log K, shape ``z.shape[:-1]``."""
        q = self.posterior()
        per_component = q.log_prob(z.unsqueeze(-2))  # (..., K)
        return torch.logsumexp(per_component, dim=-1) - math.log(self.config.components)

    @torch.no_grad()
    def sample(self, n: int, y=None) -> torch.Tensor:
        """n draws: a pseudo-input k uniformly at random, then z ~ q(z | u_k)."""
        k = torch.randint(self.config.components, (n,), device=self.logits.device)
        return self._posterior_code(torch.sigmoid(self.logits[k])).dist.sample()
