"""Model assembly: components from the registry composed into one autoencoder.

One training step, for every variant alike::

    x, y -> corruption -> x~ -> encoder(x~, y) -> features -> bottleneck -> code, z (L samples)
         -> decoder(z, y) -> loss = -log p(x | z) against the clean x
            + the bottleneck's own loss terms + sum of regularizer penalties

A pipeline that names no bottleneck passes the encoder's output straight through (its code, or
L draws of the posterior it gives itself): the autoencoders written before bottlenecks existed.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from aepipe.components import Code, Encoding, ModelSpec, Step
from aepipe.errors import ConfigError
from aepipe.limits import check_fits
from aepipe.likelihoods import make_likelihood

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.config import Pipeline
    from aepipe.data import DataBundle


class PassThrough(nn.Module):
    """The bottleneck of a pipeline that names none: the encoder's code as it is, or L
    reparameterized draws of the posterior the encoder gives itself (``Encoding.dist``)."""

    name = ""
    what: tuple[str, ...] = ()
    discrete = False

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        q = encoding.dist
        if q is None:
            return Code(encoding.code, encoding.code)
        n = encoding.code.shape[0]
        z = q.rsample((samples,)).reshape(samples * n, -1)
        draw = z[:n]
        return Code(encoding.code, z, samples, dist=q, outputs={"mean": encoding.code, "sample": draw})


#: what ``encode --what`` always offers
CODE = "code"


class AutoEncoder(nn.Module):
    """Encoder, bottleneck, decoder, likelihood and optional corruption, prior, sampler and
    regularizers."""

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
        bottleneck: nn.Module | None = None,
        sampler: nn.Module | None = None,
    ):
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.bottleneck = bottleneck if bottleneck is not None else PassThrough()
        self.decoder = decoder
        self.corruption = corruption
        self.prior = prior
        self.sampler = sampler
        self.regularizers = nn.ModuleDict(regularizers or {})
        self.likelihood_name = likelihood
        self.sigma = sigma
        self.likelihood = make_likelihood(likelihood, sigma)
        self.samples = samples
        self.meta = dict(meta or {})
        #: each regularizer's share of its weight in training steps (warm-up); 1 in evaluation
        self.penalty_scale: dict[str, float] = {key: 1.0 for key in self.regularizers}
        #: the bottleneck's share of the weight of its loss terms in training steps (warm-up)
        self.loss_scale = 1.0

    # --- pieces -----------------------------------------------------------------------------

    def one_hot(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.spec.conditional:
            return None
        if y is None:
            raise ConfigError("this model is conditional: it needs labels (y) to encode or decode")
        return F.one_hot(y.long(), self.spec.n_classes).to(torch.get_default_dtype())

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None, samples: int = 1) -> Code:
        """The bottleneck's :class:`Code` of ``x``: ``.code`` is the deterministic code."""
        y1 = self.one_hot(y)
        return self.bottleneck(self.encoder(x, y1), y1, samples)

    @torch.no_grad()
    def probe(self, features: bool = False) -> Code | Encoding:
        """The model's :class:`Code` of one all-zero input (label 0 for conditional models), in
        evaluation mode, or with ``features`` the encoder's own :class:`Encoding`: what
        components check in ``setup`` (is the code stochastic? does the encoder give a posterior?)."""
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        x = torch.zeros(1, self.spec.input_dim, device=device)
        y = torch.zeros(1, dtype=torch.long, device=device) if self.spec.conditional else None
        was = self.training
        self.eval()
        try:
            return self.encoder(x, self.one_hot(y)) if features else self.encode(x, y)
        finally:
            self.train(was)

    def offers(self) -> tuple[str, ...]:
        """What ``encode --what`` can give for this model."""
        if isinstance(self.bottleneck, PassThrough):  # what the encoder gives: a code, or a posterior too
            return (CODE, *self.probe().outputs)
        return (CODE, *self.bottleneck.what, *(name for name, _ in self.spec.groups))

    def represent(self, x: torch.Tensor, y: torch.Tensor | None = None, what: str = CODE) -> torch.Tensor:
        """``encode --what``: the code (default), or an output the bottleneck offers (``mean``,
        ``sample``, ``indices``...)."""
        if what not in self.offers():
            raise ConfigError(f"--what {what}: this model's bottleneck offers {', '.join(self.offers())}")
        code = self.encode(x, y)
        if what == CODE:
            return code.code
        return code.outputs[what] if what in code.outputs else self.spec.split(code.code)[what]

    def components(self) -> dict[str, nn.Module]:
        """Every component of the model by its place (``encoder``, ``regularizers.kl``...)."""
        parts: dict[str, Any] = {"encoder": self.encoder, "bottleneck": self.bottleneck, "decoder": self.decoder,
                                 "corruption": self.corruption, "prior": self.prior, "sampler": self.sampler}
        parts.update({f"regularizers.{k}": r for k, r in self.regularizers.items()})
        return {k: v for k, v in parts.items() if v is not None and getattr(v, "kind", "")}

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode codes to the likelihood's mean (the reconstruction)."""
        return self.likelihood.mean(self.decoder(z, self.one_hot(y)))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct ``x`` through the deterministic code (the posterior mean)."""
        return self.decode(self.encode(x, y).code, y)

    def draw_codes(self, n: int, y: torch.Tensor | None = None, sampler: nn.Module | None = None) -> torch.Tensor:
        """``n`` decoder inputs drawn through ``sampler`` (default: the model's fitted sampler),
        else the prior, else the standard normal (Pythae's normal sampler)."""
        sampler = sampler if sampler is not None else self.sampler
        if sampler is not None:
            if not bool(sampler.fitted):
                raise ConfigError(
                    f"sampler '{sampler.name}' was not fitted (aepipe fit-sampler RUN --sampler {sampler.name})"
                )
            return sampler.sample(n, y)
        if self.prior is not None:
            return self.prior.sample(n, y)
        device = next(self.decoder.parameters()).device
        return torch.randn(n, self.spec.code_dim, device=device)

    def sample(self, n: int, y: torch.Tensor | None = None, sampler: nn.Module | None = None) -> torch.Tensor:
        """Decode ``n`` draws (given labels ``y`` for conditional models): see :meth:`draw_codes`."""
        return self.decode(self.draw_codes(n, y, sampler), y)

    def model_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the main optimizer (not those regularizers own, nor a sampler's)."""
        owned = {id(p) for reg in self.regularizers.values() if reg.owns_parameters for p in reg.parameters()}
        if self.sampler is not None:
            owned |= {id(p) for p in self.sampler.parameters()}
        return [p for p in self.parameters() if id(p) not in owned]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: each component's own (:meth:`parameter_groups` of
        a component, with its own ``lr``...), then one group of every other trained parameter."""
        trained = {id(p) for p in self.model_parameters()}
        groups, taken = [], set()
        for part in self.components().values():
            for group in part.parameter_groups() if hasattr(part, "parameter_groups") else []:
                params = [p for p in group["params"] if id(p) in trained and id(p) not in taken]
                taken |= {id(p) for p in params}
                if params:
                    groups.append({**group, "params": params})
        rest = [p for p in self.model_parameters() if id(p) not in taken]
        return [{"params": rest}, *groups] if groups else [{"params": rest}]

    def after_step_parts(self) -> list[nn.Module]:
        """The components that update state after every optimizer step."""
        from aepipe.components import ModelComponent

        return [part for part in self.components().values()
                if isinstance(part, ModelComponent) and type(part).after_step is not ModelComponent.after_step]

    # --- the step ---------------------------------------------------------------------------

    def step(
        self, x: torch.Tensor, y: torch.Tensor | None = None, training: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Step]:
        """One forward pass: the loss, its terms (``recon`` and ``penalty.<key>``) and the step."""
        y1 = self.one_hot(y)
        x_tilde = self.corruption(x) if (training and self.corruption is not None) else x
        features = self.encoder(x_tilde, y1)
        code = self.bottleneck(features, y1, self.samples)
        z, repeat = code.z, code.samples
        y_rep = y1.repeat(repeat, 1) if (y1 is not None and repeat > 1) else y1
        output = self.decoder(z, y_rep)
        target = x.repeat(repeat, 1) if repeat > 1 else x
        recon = self.likelihood.nll(output, target).mean()
        step = Step(self, x, x_tilde, y, y1, code, z, output, training, features)
        terms = {"recon": recon}
        scale = self.loss_scale if training else 1.0
        for name, value in code.losses.items():
            terms[f"penalty.{name}"] = value if scale == 1.0 else value * scale
        for key, reg in self.regularizers.items():
            value = reg.penalty(step)
            if value is not None:  # None: the regularizer acts only in its own update()
                scale = self.penalty_scale.get(key, 1.0) if training else 1.0
                terms[f"penalty.{key}"] = value if scale == 1.0 else value * scale
        loss = _sum_terms(terms)
        if code.diagnostics:  # unweighted statistics, logged beside the loss's terms, not in it
            terms.update({f"diag.{name}": value.detach() for name, value in code.diagnostics.items()})
        return loss, terms, step


def _sum_terms(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss: the sum of its terms, added one by one (one operation per term beyond the
    first, none for a single term, and none in the backward pass; a stack and a sum cost four
    more operations a step, which on a small model on a GPU is a fifth of the step's launches)."""
    values = iter(terms.values())
    total = next(values)
    for value in values:
        total = total + value
    return total


def build_model(pipeline: Pipeline, data: DataBundle) -> AutoEncoder:
    """Build every component of ``pipeline`` for ``data`` and let each check the whole (its
    ``setup``)."""
    model = construct_model(pipeline, data)
    setup_model(pipeline, model)
    return model


def construct_model(pipeline: Pipeline, data: DataBundle) -> AutoEncoder:
    """Every component of ``pipeline`` built for ``data`` and composed, before any ``setup``:
    what sizing the model on the meta device needs (:func:`model_parameters`)."""
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
        train_size=len(data.train) if getattr(data, "train", None) is not None else 0,
    )
    choices = dict(pipeline.components)
    bottleneck = choices.get("bottleneck")
    if bottleneck is not None:  # the latent groups it declares, which every component sees
        groups = tuple(_in_context(bottleneck, pipeline, bottleneck.cls.groups, bottleneck.config, spec))
        if groups and sum(width for _, width in groups) != spec.code_dim:
            raise ConfigError(f"{pipeline.source}: {bottleneck.path} ({bottleneck.kind} '{bottleneck.name}'): its "
                              f"groups {dict(groups)} do not add up to model.code_dim = {spec.code_dim}")
        spec = dataclasses.replace(spec, groups=groups)
    built = {}
    for section, choice in choices.items():
        part_spec = spec
        if section == "encoder" and bottleneck is not None:  # the encoder gives what the bottleneck takes
            width = _in_context(bottleneck, pipeline, bottleneck.cls.features, bottleneck.config, spec)
            part_spec = dataclasses.replace(spec, code_dim=width)
        built[section] = _build(choice, part_spec, pipeline)
    regs = {key: _build(choice, spec, pipeline) for key, choice in pipeline.regularizers.items()}
    meta = {
        "variant": pipeline.variant,
        "dataset": pipeline.dataset.name,
        "value_range": list(data.value_range),
        "clip": bool(getattr(data, "clip", getattr(getattr(data, "train", None), "clip", True))),
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
        bottleneck=built.get("bottleneck"),
        sampler=built.get("sampler"),
    )
    penalties = {f"penalty.{key}" for key in regs}
    losses = getattr(model.bottleneck, "loss_names", ())
    clash = sorted(penalties & {f"penalty.{name}" for name in losses})
    if clash:
        raise ConfigError(f"{pipeline.source}: bottleneck '{bottleneck.name}' logs {clash[0]} and so does the "
                          "regularizer of that key; rename the regularizer's key")
    return model


def setup_model(pipeline: Pipeline, model: AutoEncoder) -> None:
    """Let each component of ``model`` check the assembled whole and prepare (its ``setup``:
    once per model), in the pipeline's order; a ConfigError names the component's section."""
    every = [*((choice, getattr(model, section)) for section, choice in pipeline.components.items()),
             *((choice, model.regularizers[key]) for key, choice in pipeline.regularizers.items())]
    for choice, part in every:
        _in_context(choice, pipeline, part.setup, model)


@torch.no_grad()
def initialize_model(model: AutoEncoder, data: DataBundle, rows: int = 1024, seed: int = 0) -> None:
    """The fresh-initialisation hook of a new run: each component's ``initialize(model, x)``,
    in the order of :meth:`AutoEncoder.components`, with ``x`` the same ``rows`` training rows
    drawn with ``seed``. Only where a component overrides it (nothing is drawn otherwise)."""
    from aepipe.components import ModelComponent

    parts = [part for part in model.components().values()
             if isinstance(part, ModelComponent) and type(part).initialize is not ModelComponent.initialize]
    if not parts:
        return
    n = len(data.train)
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randperm(n, generator=generator)[:rows].sort().values
    x = data.train.take(positions)[0]
    for part in parts:
        part.initialize(model, x)


def _in_context(choice: Any, pipeline: Pipeline, fn: Any, *args: Any) -> Any:
    """Call ``fn``; a ConfigError it raises is prefixed with the file and the component's section."""
    try:
        return fn(*args)
    except ConfigError as exc:
        raise ConfigError(f"{pipeline.source}: {choice.path} ({choice.kind} '{choice.name}'): {exc}") from None


def _build(choice: Any, spec: ModelSpec, pipeline: Pipeline) -> nn.Module:
    return _in_context(choice, pipeline, choice.cls, choice.config, spec)


def model_parameters(pipeline: Any, data: Any) -> dict[str, int] | None:
    """Parameters of each part of the model ``pipeline`` builds (``model.encoder``, ...), and
    the bytes of its buffers (``buffer_bytes``), counted on a construction on torch's meta
    device: no memory is allocated however large the settings, the random generators are left
    as they were (the model the run trains draws the same weights), and no component's ``setup``
    runs (it runs once, on the model the run trains). None if a component cannot be built there
    (it reads its data while building)."""
    import numpy as np

    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)  # its checks read values
    drawn = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = construct_model(pipeline, data)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - a component that needs real tensors to build: not measured
        return None
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)
        np.random.set_state(drawn)
    counts: dict[str, int] = {}
    parts = {**{c.path: getattr(model, c.path.rsplit(".", 1)[-1], None) for c in pipeline.components.values()},
             **{c.path: model.regularizers[key] for key, c in pipeline.regularizers.items()}}
    for path, part in parts.items():
        if isinstance(part, torch.nn.Module):
            counts[path] = sum(p.numel() for p in part.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["buffer_bytes"] = sum(b.numel() * b.element_size() for b in model.buffers())
    return counts


def check_model_fits(pipeline: Any, data: Any, device: Any) -> None:
    """Refuse, before building it, a model whose weights, gradients and optimizer state (four
    float32 copies), buffers and one batch's activations do not fit ``device``'s free memory."""
    counts = model_parameters(pipeline, data)
    if counts is None:
        return
    m = pipeline.settings.model
    batch = min(pipeline.settings.train.batch_size, max(1, len(data.train)))
    need = 16 * counts["total"] + counts["buffer_bytes"] + 4 * 8 * batch * m.samples * (data.input_dim + m.code_dim)
    largest = max((k for k in counts if k not in ("total", "buffer_bytes")), key=lambda k: counts[k], default="model")
    check_fits(need, f"{pipeline.source}: the model ({counts['total']:,} parameters, most in {largest})", device,
               f"lower the sizes of [{largest}] or model.code_dim")
