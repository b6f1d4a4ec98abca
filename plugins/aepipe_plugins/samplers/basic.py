"""The ``prior`` and ``gmm`` samplers."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from aepipe.plugin import ComponentConfig, ConfigError, ModelSpec, Sampler, code_tensor


class PriorSampler(Sampler):
    """The model's own prior; the standard normal for a model without one (fits nothing)."""

    name = "prior"

    def __init__(self, config: ComponentConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.fitted.fill_(True)  # nothing to fit

    @property
    def draws(self) -> str:
        """What the model's prior draws (N(0, I): real vectors, without one)."""
        model = getattr(self, "_model", [None])[0]
        return model.prior.draws if model is not None and model.prior is not None else "real"

    def setup(self, model) -> None:
        self._model = [model]  # a plain reference: not a submodule of the sampler

    def fit(self, model, split) -> dict[str, float]:
        self._model = [model]
        return {}

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        model = self._model[0]
        if model.prior is not None:
            return model.prior.sample(n, y)
        return torch.randn(n, self.spec.code_dim, device=self.fitted.device)


class GMMConfig(ComponentConfig):
    """``components``: k Gaussians; ``covariance``: scikit-learn's ``full`` or ``diag``;
    ``max_iter`` of EM; ``seed`` of its initialisation; ``max_codes``: at most this many
    training codes are fitted on (a random subset, drawn with ``seed``)."""

    components: int = Field(10, ge=1, le=1000, description="k, the Gaussians of the mixture")
    covariance: Literal["full", "diag"] = Field(
        "full", description="each component's covariance (scikit-learn's covariance_type)"
    )
    max_iter: int = Field(200, ge=1, le=100_000, description="EM iterations at most")
    seed: int = Field(0, ge=0, description="seed of the initialisation and of the subset of codes")
    max_codes: int = Field(50_000, ge=2, description="at most this many training codes are fitted on")


class GMMSampler(Sampler):
    """A Gaussian mixture fitted on the training codes (scikit-learn's ``GaussianMixture``),
    stored as its weights, means and Cholesky factors of the covariances and drawn from in torch.
    For deterministic and weakly regularized models it gives samples far closer to the data
    than N(0, I) (Ghosh et al. 2020's ex-post density estimation)."""

    name = "gmm"
    Config = GMMConfig
    #: the conformance suite checks the contract, not the fit: on a few codes
    conformance = {"model": {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]},
                             "sampler": {"name": "gmm", "max_codes": 256}}}

    def __init__(self, config: GMMConfig, spec: ModelSpec):
        super().__init__(config, spec)
        k, d = config.components, spec.code_dim
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("means", torch.zeros(k, d))
        self.register_buffer("scale_tril", torch.eye(d).repeat(k, 1, 1))

    def setup(self, model) -> None:
        if model.spec.conditional:
            raise ConfigError(
                "sampler 'gmm' fits codes without their labels; a conditional model samples through 'prior'"
            )

    def fit(self, model, split) -> dict[str, float]:
        from sklearn.mixture import GaussianMixture

        codes = code_tensor(model, split).double().cpu().numpy()
        c = self.config
        if len(codes) > c.max_codes:
            codes = codes[np.random.default_rng(c.seed).choice(len(codes), c.max_codes, replace=False)]
        if len(codes) < c.components:
            raise ConfigError(f"sampler 'gmm': {len(codes)} training codes cannot fit {c.components} components")
        gmm = GaussianMixture(
            c.components, covariance_type=c.covariance, max_iter=c.max_iter, random_state=c.seed, reg_covar=1e-6
        )
        gmm.fit(codes)
        cov = gmm.covariances_ if c.covariance == "full" else np.stack([np.diag(v) for v in gmm.covariances_])
        like = self.means
        self.weights.copy_(torch.as_tensor(gmm.weights_, dtype=like.dtype))
        self.means.copy_(torch.as_tensor(gmm.means_, dtype=like.dtype))
        self.scale_tril.copy_(torch.as_tensor(np.linalg.cholesky(cov), dtype=like.dtype))
        return {"gmm_log_likelihood": float(gmm.score(codes)), "gmm_converged": float(gmm.converged_)}

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        which = torch.multinomial(self.weights, n, replacement=True)
        eps = torch.randn(n, self.spec.code_dim, 1, device=self.means.device, dtype=self.means.dtype)
        return self.means[which] + (self.scale_tril[which] @ eps).squeeze(-1)
