"""Base classes of every component kind (the types they exchange are in :mod:`aepipe.datatypes`).

A component is a class with a class-level ``name`` and a ``Config`` (a pydantic model derived
from :class:`ComponentConfig`). aepipe builds it as ``cls(config, spec)`` (datasets as
``cls(config)``) from a pipeline file's settings, validated by ``Config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from aepipe.datatypes import Code, Encoding, Group, ModelSpec, RawData, Rows
from aepipe.errors import ConfigError, PluginError
from aepipe.strict import StrictModel
from aepipe.variant import Variant

if TYPE_CHECKING:  # pragma: no cover - typing only
    from aepipe.protocols import Model, PluginSource

#: the data types defined in :mod:`aepipe.datatypes` are part of this module's names too
__all__ = ["ACTIVATIONS", "Bottleneck", "Code", "Component", "ComponentConfig", "Corruption", "Dataset", "Decoder",
           "Encoder", "Encoding", "Group", "ModelComponent", "ModelSpec", "Prior", "RawData", "Regularizer",
           "Rows", "Sampler", "Step", "Variant", "activation", "check_component_class", "require"]


class ComponentConfig(StrictModel):
    """Settings of a component. Subclass it, with typed fields and defaults.

    Unknown keys are errors, values are not coerced from another type, and validation happens
    when the pipeline is resolved (see :mod:`aepipe.strict`).
    """


ACTIVATIONS = {
    "identity": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
}


def activation(name: str) -> nn.Module:
    """An activation module by name (see :data:`ACTIVATIONS`)."""
    return ACTIVATIONS[name]()


class Component:
    """Shared behaviour of every component kind."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    #: settings (each a dict of this component's own settings, as in its pipeline section) under
    #: which the conformance suite checks it too, after its defaults: a code path behind a setting
    #: is checked only where it is listed here (see :func:`aepipe.testing.check_component`)
    conformance_settings: ClassVar[tuple[dict[str, Any], ...]] = ()

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


class Dataset(Component):
    """A source of data: ``load()`` returns :class:`RawData`."""

    kind = "dataset"

    def __init__(self, config: ComponentConfig):
        self.config = config

    def load(self) -> RawData:  # pragma: no cover - abstract
        raise NotImplementedError


class ModelComponent(Component, nn.Module):
    """A part of the model, built as ``cls(config, spec)``."""

    def __init__(self, config: ComponentConfig, spec: ModelSpec):
        nn.Module.__init__(self)
        self.config = config
        self.spec = spec

    #: the pipeline the conformance suite builds around this component instead of its default
    #: composition: a partial pipeline (``{"model": {...}}``, over aepipe's defaults) or a whole
    #: model (``{"variant": NAME}``, optionally with ``"model"`` overrides of that variant's
    #: defaults); the component goes into its section (see :func:`aepipe.testing.check_component`)
    conformance: ClassVar[dict[str, Any] | None] = None

    def setup(self, model: Model) -> None:
        """Check the assembled model and prepare (override; raise ConfigError on misuse).

        Runs once per built model, every component's in the pipeline's order, after every
        component is constructed and before any weights are loaded (a rebuilt or resumed run
        loads its weights afterwards) and before :meth:`initialize`. Reach another component
        here with :meth:`use`, never by holding it as an attribute."""

    def use(self, model: Model, place: str) -> nn.Module:
        """The model's component at ``place`` (``decoder``, ``bottleneck``, ``regularizers.kl``...)
        to call or read from this one, held without registering it: its modules and parameters
        stay registered once, under their owner (saved, loaded and trained there, as the owner's).
        Call it in :meth:`setup`; the component is then :meth:`shared` ``(place)``."""
        parts = model.components()
        if place not in parts:
            raise ConfigError(f"{self.kind} '{self.name}' uses the model's {place}, which this model has none of "
                              f"(it has {', '.join(parts)})")
        shared = self.__dict__.setdefault("_shared", {})  # a plain dict: nothing registered twice
        shared[place] = parts[place]
        return parts[place]

    def shared(self, place: str) -> nn.Module:
        """The component :meth:`use` reached at ``place``."""
        return self.__dict__["_shared"][place]

    def initialize(self, model: Model, x: torch.Tensor) -> None:
        """Data-dependent initialisation of a new run (override): ``x`` is a sample of the
        training rows ``(m, input_dim)`` scaled as the model sees them, on the model's device.
        Runs once, after every :meth:`setup`, on a new run only: never on a resumed run nor a
        model rebuilt from its weights (they hold what it set). Called under ``torch.no_grad()``."""

    @property
    def device(self) -> torch.device:
        """The device of this component's first parameter or buffer (where it draws new tensors).
        A component with neither (a prior without parameters) registers one that is not saved:
        ``self.register_buffer("anchor", torch.zeros(()), persistent=False)``; it moves with the
        model and stays out of the weights."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        raise PluginError(f"{self.kind} '{self.name}' has no parameter or buffer to know its device by: register one "
                          f"that is not saved, self.register_buffer(\"anchor\", torch.zeros(()), persistent=False)")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups of this component's own, each a dict with ``params`` and
        the options that differ from the run's (``lr``, ``weight_decay``...), as torch's
        optimizers take them. Parameters in no group train with the run's settings."""
        return []

    def settled(self) -> bool:
        """Whether this component's part of the validation loss has stopped changing with training
        progress (default: always). One with an annealed target (a capacity that grows with the
        steps) returns False until the target stops moving: until every component has settled,
        early stopping keeps the latest epoch as the best and counts no epoch as worse, since the
        loss of earlier epochs measured another objective."""
        return True

    def after_step(self) -> None:
        """Update state after every optimizer step of the model (an exponential moving average,
        a temperature schedule). Called in training only, under ``torch.no_grad()``."""

    def epoch_metrics(self, model: Model, split: Any) -> dict[str, Any]:
        """Metrics of this component on the validation split at the end of every epoch, by bare
        name (floats or 0-d tensors); aepipe logs each as ``val_<name>``. Called only for the
        components of the run."""
        return {}

    def final_metrics(self, model: Model, data: Any) -> dict[str, Any]:
        """Metrics of this component once the run has trained, on ``data.test`` (``data`` is
        the run's :class:`aepipe.data.DataBundle`), by bare name; aepipe logs each as
        ``test_<name>``. Called only for the components of the run."""
        return {}


class Encoder(ModelComponent):
    """x (and a label, for conditional models) -> :class:`Encoding`."""

    kind = "encoder"

    @property
    def in_features(self) -> int:
        return self.spec.input_dim + self.spec.cond_dim

    def with_label(self, x: torch.Tensor, y_onehot: torch.Tensor | None) -> torch.Tensor:
        """Append the one-hot label to flat inputs when the model is conditional."""
        if self.spec.conditional:
            return torch.cat([x, y_onehot], dim=-1)
        return x

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor | None = None) -> Encoding:  # pragma: no cover
        raise NotImplementedError

    def code_range(self) -> tuple[float, float] | None:
        """Bounds (low, high) of the deterministic code where known (a sigmoid code: (0, 1))."""
        return None


class Decoder(ModelComponent):
    """z (and a label) -> the likelihood's parameters, shape ``(n, input_dim)``."""

    kind = "decoder"

    @property
    def in_features(self) -> int:
        return self.spec.code_dim + self.spec.cond_dim

    def with_label(self, z: torch.Tensor, y_onehot: torch.Tensor | None) -> torch.Tensor:
        if self.spec.conditional:
            return torch.cat([z, y_onehot], dim=-1)
        return z

    #: whether it takes the code's latent groups by name (a top-down hierarchy that adds each
    #: group at its own depth): it then implements :meth:`forward_groups`, not ``forward``
    takes_groups: ClassVar[bool] = False

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor | None = None) -> torch.Tensor:
        if self.takes_groups:
            return self.forward_groups(self.spec.split(z), y_onehot)
        raise NotImplementedError  # pragma: no cover

    def forward_groups(self, latents: dict[str, torch.Tensor], y_onehot: torch.Tensor | None = None) -> torch.Tensor:
        """The likelihood's parameters from the latent groups by name (``spec.groups``'s order,
        the top first), each ``(m, width)``: what a decoder with ``takes_groups`` implements."""
        raise NotImplementedError  # pragma: no cover


class Corruption(ModelComponent):
    """x -> x~, a stochastic corruption used in training only."""

    kind = "corruption"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Prior(ModelComponent):
    """p(z): ``sample`` always, ``log_prob`` where it is defined (``has_log_prob``).

    ``y`` (integer labels) selects a class's part of the prior where the prior ties classes to
    components (``class_conditional``); otherwise it is ignored. ``distribution(y)`` returns a
    ``torch.distributions`` object where one exists, so that KL terms can be analytic.
    """

    kind = "prior"
    has_log_prob: ClassVar[bool] = True
    #: what ``sample`` draws, one of :data:`aepipe.sampling.SUPPORTS` (``"code"``: the
    #: bottleneck's own codes); ``aepipe sample`` refuses draws that do not fit the code
    draws: ClassVar[str] = "real"
    class_conditional: ClassVar[bool] = False

    def distribution(self, y: torch.Tensor | None = None) -> torch.distributions.Distribution | None:
        return None

    def diagonal_normal(
        self, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | float, torch.Tensor | float] | None:
        """``(loc, scale)`` where p(z) is a diagonal Gaussian (broadcastable to ``(n, code_dim)``:
        tensors, or numbers such as ``(0.0, 1.0)`` for N(0, I), which save the closed form its
        shift and division), so that a Gaussian posterior's KL is computed in closed form without
        building distribution objects per batch; None otherwise."""
        return None

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Bottleneck(ModelComponent):
    """The encoder's features (and the one-hot label of conditional models) -> the code the
    decoder sees: ``forward(encoding, y_onehot, samples)`` returns a :class:`Code` (the code,
    L = ``samples`` draws for the decoder where the code is stochastic, the posterior, the
    bottleneck's own loss terms and what ``encode --what`` may ask for).

    :meth:`features` says how wide the encoder's output must be (the encoder is built for it);
    ``what`` lists the ``encode --what`` outputs besides ``code``; :meth:`from_indices` turns
    discrete codes back into decoder inputs where the code is discrete (samplers of indices use
    it). Any encoder composes with any bottleneck.
    """

    kind = "bottleneck"
    #: what ``aepipe encode --what`` may ask for besides ``code``
    what: ClassVar[tuple[str, ...]] = ()
    #: whether codes are discrete (``indices`` of ``from_indices``): samplers of indices need it
    discrete: ClassVar[bool] = False
    #: what the decoder's inputs are, one of :data:`aepipe.sampling.SUPPORTS` (``"real"``: any
    #: real vector); ``aepipe sample`` refuses a prior or sampler whose draws do not fit it
    support: ClassVar[str] = "real"

    #: the ``Config`` field that scales its loss terms (logged as ``weight.<name>`` each epoch,
    #: times the warm-up share); a bottleneck's table also takes ``warmup_epochs`` (read by
    #: aepipe): in training its ``losses`` rise linearly from 0 over that many epochs
    weight_setting: ClassVar[str | None] = None

    @classmethod
    def features(cls, config: ComponentConfig, spec: ModelSpec) -> int:
        """The width of the encoder's output this bottleneck takes (default ``spec.code_dim``)."""
        return spec.code_dim

    @classmethod
    def groups(cls, config: ComponentConfig, spec: ModelSpec) -> tuple[tuple[str, int], ...]:
        """The code's latent groups ``(name, width)``, the top of a hierarchy first, widths
        summing to ``spec.code_dim`` (default: none, a code of one group). Every component of
        the model sees them as ``spec.groups``; ``encode --what NAME`` gives each group's code."""
        return ()

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None,
                samples: int = 1) -> Code:  # pragma: no cover
        raise NotImplementedError

    def from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Decoder inputs ``(n, code_dim)`` of discrete codes (``indices`` as ``outputs["indices"]``)."""
        raise NotImplementedError(f"bottleneck '{self.name}' has no discrete codes")

    def index_shape(self) -> tuple[int, int] | None:
        """``(positions, choices)`` of a discrete code: the indices of one input are
        ``positions`` integers in ``[0, choices)``; None for continuous codes."""
        return None


class Sampler(ModelComponent):
    """A second stage, fitted on the training codes after training (``[model.sampler]``, or
    ``aepipe fit-sampler RUN --sampler NAME`` later): ``fit(model, split)`` then
    ``sample(n, y)``, the decoder inputs of ``n`` draws. Its fitted state lives in buffers and
    parameters (saved with the model's weights: data, never pickled code); its parameters are
    left out of the model's optimizer. ``fitted`` is a buffer that says whether it was fitted.
    """

    kind = "sampler"
    #: what ``sample`` draws, one of :data:`aepipe.sampling.SUPPORTS` (a property where it
    #: depends on the model); ``aepipe sample`` refuses draws that do not fit the code
    draws: ClassVar[str] = "real"

    def __init__(self, config: ComponentConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, model: Model, split: Any) -> dict[str, float]:  # pragma: no cover
        """Fit on the codes of ``split`` (the training split; iterate it with
        :func:`aepipe.data.batches`); returns metrics of the fit by bare name (logged as
        ``sampler.<name>``)."""
        raise NotImplementedError

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        """Decoder inputs ``(n, code_dim)`` of ``n`` draws (labels ``y`` for conditional models)."""
        raise NotImplementedError


@dataclass
class Step:
    """One forward pass, as regularizers see it."""

    model: Model  # the assembled model (aepipe.model.AutoEncoder)
    x: torch.Tensor  # clean inputs (n, d)
    x_tilde: torch.Tensor  # corrupted inputs the encoder saw
    y: torch.Tensor | None  # integer labels (n,) where they exist
    y_onehot: torch.Tensor | None
    encoding: Code  # the bottleneck's output: code, z, dist, log_q, losses, outputs
    z: torch.Tensor  # codes fed to the decoder, (samples * n, code_dim)
    output: torch.Tensor  # decoder output for z
    training: bool = True
    features: Encoding | None = None  # the encoder's own output, before the bottleneck


class Regularizer(ModelComponent):
    """A penalty added to the loss; already weighted by its own setting.

    ``penalty(step)`` returns a scalar tensor (or None: no term in the main loss). A
    regularizer with parameters of its own sets ``owns_parameters = True``; aepipe leaves them
    out of the model's optimizer and calls ``update(step)`` after each model step, where it
    takes its own optimisation steps and returns scalar tensors to log. Optimizers it keeps in
    ``self.optimizers`` (a dict) are checkpointed and restored with the run.
    ``evaluate(step)`` may return extra validation and test metrics, by bare name (aepipe
    logs them as ``val_<name>`` and ``test_<name>``).

    Every regularizer table also takes ``warmup_epochs`` (read by aepipe, not the regularizer):
    the penalty's weight in training rises linearly from 0 over that many epochs.
    """

    kind = "regularizer"
    owns_parameters: ClassVar[bool] = False
    #: the ``Config`` field that scales the penalty (``beta``, ``lam``...): logged as
    #: ``weight.<key>`` each epoch, times the warm-up share (``warmup_epochs``)
    weight_setting: ClassVar[str | None] = None

    def __init__(self, config: ComponentConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def penalty(self, step: Step) -> torch.Tensor | None:  # pragma: no cover
        raise NotImplementedError

    def update(self, step: Step) -> dict[str, torch.Tensor]:
        return {}

    def evaluate(self, step: Step) -> dict[str, torch.Tensor]:
        """Extra metrics on a validation or test batch (``step.training`` is False)."""
        return {}


def __getattr__(name: str):
    if name == "BASES":  # each kind's base class, derived from the one table in aepipe.kinds
        from aepipe.kinds import bases

        return bases()
    raise AttributeError(f"module 'aepipe.components' has no attribute {name!r}")


def check_component_class(cls: type, source: PluginSource) -> None:
    """Reject a component class whose ``Config`` is not a :class:`ComponentConfig`."""
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
        raise PluginError(f"{source.describe()}: {cls.kind} '{cls.name}' has Config={config!r}; expected a "
                          f"subclass of aepipe.components.ComponentConfig", plugin=source.name)


def require(condition: bool, message: str) -> None:
    """Raise a :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
