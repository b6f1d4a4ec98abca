"""Model assembly: components from the registry composed into one autoencoder.

One training step, for every variant alike::

    x, y -> corruption -> x~ -> encoder(x~, y) -> code or q(z|x) -> z (L samples) -> decoder(z, y)
         -> loss = -log p(x | z) against the clean x + sum of regularizer penalties
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from aepipe.components import Encoding, ModelSpec, Step
from aepipe.errors import ConfigError
from aepipe.likelihoods import make_likelihood

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.config import Pipeline
    from aepipe.data import DataBundle


class AutoEncoder(nn.Module):
    """Encoder, decoder, likelihood and optional corruption, prior and regularizers."""

    def __init__(
        self,
        spec: ModelSpec,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: str = "bernoulli",
        sigma: float = 1.0,
        samples: int = 1,
        corruption: nn.Module | None = None,
        prior: nn.Module | None = None,
        regularizers: dict[str, nn.Module] | None = None,
        meta: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.decoder = decoder
        self.corruption = corruption
        self.prior = prior
        self.regularizers = nn.ModuleDict(regularizers or {})
        self.likelihood_name = likelihood
        self.sigma = sigma
        self.likelihood = make_likelihood(likelihood, sigma)
        self.samples = samples
        self.meta = dict(meta or {})
        #: each regularizer's share of its weight in training steps (warm-up); 1 in evaluation
        self.penalty_scale: dict[str, float] = {key: 1.0 for key in self.regularizers}

    # --- pieces -----------------------------------------------------------------------------

    def one_hot(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.spec.conditional:
            return None
        if y is None:
            raise ConfigError("this model is conditional: it needs labels (y) to encode or decode")
        return F.one_hot(y.long(), self.spec.n_classes).to(torch.get_default_dtype())

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Encoding:
        return self.encoder(x, self.one_hot(y))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode codes to the likelihood's mean (the reconstruction)."""
        return self.likelihood.mean(self.decoder(z, self.one_hot(y)))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct ``x`` through the deterministic code (the posterior mean)."""
        return self.decode(self.encode(x, y).code, y)

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode ``n`` draws from the prior (given labels ``y`` for conditional models)."""
        if self.prior is None:
            raise ConfigError("this model has no prior to sample from (set [model.prior])")
        return self.decode(self.prior.sample(n, y), y)

    def model_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the main optimizer (not those regularizers own)."""
        owned = {id(p) for reg in self.regularizers.values() if reg.owns_parameters for p in reg.parameters()}
        return [p for p in self.parameters() if id(p) not in owned]

    # --- the step ---------------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor | None = None, training: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor], Step]:
        """One forward pass: the loss, its terms (``recon`` and ``penalty.<key>``) and the step."""
        y1 = self.one_hot(y)
        x_tilde = self.corruption(x) if (training and self.corruption is not None) else x
        encoding = self.encoder(x_tilde, y1)
        n = x.shape[0]
        if encoding.dist is not None:
            z = encoding.dist.rsample((self.samples,)).reshape(self.samples * n, -1)
            repeat = self.samples
        else:
            z, repeat = encoding.code, 1
        y_rep = y1.repeat(repeat, 1) if y1 is not None else None
        output = self.decoder(z, y_rep)
        target = x.repeat(repeat, 1) if repeat > 1 else x
        recon = self.likelihood.nll(output, target).mean()
        step = Step(self, x, x_tilde, y, y1, encoding, z, output, training)
        terms = {"recon": recon}
        for key, reg in self.regularizers.items():
            value = reg.penalty(step)
            if value is not None:  # None: the regularizer acts only in its own update()
                scale = self.penalty_scale.get(key, 1.0) if training else 1.0
                terms[f"penalty.{key}"] = value if scale == 1.0 else value * scale
        loss = torch.stack(list(terms.values())).sum()
        return loss, terms, step


def build_model(pipeline: Pipeline, data: DataBundle) -> AutoEncoder:
    """Build every component of ``pipeline`` for ``data`` and let each check the whole."""
    m = pipeline.settings.model
    if m.conditional and data.n_classes < 2:
        raise ConfigError(
            f"{pipeline.source}: model.conditional = true needs a labelled dataset; "
            f"'{pipeline.dataset.name}' has no labels"
        )
    spec = ModelSpec(
        input_dim=data.input_dim,
        code_dim=m.code_dim,
        image_shape=data.image_shape,
        n_classes=data.n_classes,
        conditional=m.conditional,
    )
    built = {section: _build(choice, spec, pipeline) for section, choice in pipeline.components.items()}
    regs = {key: _build(choice, spec, pipeline) for key, choice in pipeline.regularizers.items()}
    meta = {
        "variant": pipeline.variant,
        "dataset": pipeline.dataset.name,
        "value_range": list(data.value_range),
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "n_classes": data.n_classes,
        "input_dim": data.input_dim,
    }
    model = AutoEncoder(
        spec,
        built["encoder"],
        built["decoder"],
        likelihood=m.likelihood,
        sigma=m.sigma,
        samples=m.samples,
        corruption=built.get("corruption"),
        prior=built.get("prior"),
        regularizers=regs,
        meta=meta,
    )
    choices = [*pipeline.components.values(), *pipeline.regularizers.values()]
    for choice, part in zip(choices, [*built.values(), *regs.values()]):
        _in_context(choice, pipeline, part.setup, model)
    return model


def _in_context(choice: Any, pipeline: Pipeline, fn: Any, *args: Any) -> Any:
    """Call ``fn``; a ConfigError it raises is prefixed with the file and the component's section."""
    try:
        return fn(*args)
    except ConfigError as exc:
        raise ConfigError(f"{pipeline.source}: {choice.path} ({choice.kind} '{choice.name}'): {exc}") from None


def _build(choice: Any, spec: ModelSpec, pipeline: Pipeline) -> nn.Module:
    return _in_context(choice, pipeline, choice.cls, choice.config, spec)
