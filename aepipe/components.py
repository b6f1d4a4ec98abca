"""Base classes of every component kind, and the small types they exchange.

A component is a class with a class-level ``name`` and a ``Config`` (a pydantic model derived
from :class:`ComponentConfig`). aepipe builds it as ``cls(config, spec)`` (datasets as
``cls(config)``) from a pipeline file's settings, validated by ``Config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from aepipe.errors import ConfigError, PluginError
from aepipe.strict import StrictModel
from aepipe.variant import Variant

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.model import AutoEncoder
    from aepipe.plugins import PluginInfo


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


@dataclass(frozen=True)
class ModelSpec:
    """What a model component needs to know about its inputs and code."""

    input_dim: int
    code_dim: int
    image_shape: tuple[int, ...] | None = None  # (channels, height, width)
    n_classes: int = 0
    conditional: bool = False

    @property
    def cond_dim(self) -> int:
        """Width of the one-hot label appended to inputs of conditional models."""
        return self.n_classes if self.conditional else 0


@dataclass
class Encoding:
    """What an encoder returns.

    ``code`` is the deterministic code, or the posterior mean for a stochastic encoder, whose
    ``dist`` is q(z | x) with batch shape ``(n,)`` and event shape ``(code_dim,)``.
    """

    code: torch.Tensor
    dist: torch.distributions.Distribution | None = None

    @property
    def stochastic(self) -> bool:
        return self.dist is not None


class Rows:
    """Inputs a dataset reads on demand instead of holding them (files on disk, a Hugging Face
    table): ``shape`` ``(n, ...)`` and ``dtype`` as a numpy array's, and :meth:`read`, the rows
    at some indices as one array. aepipe reads them in batches, from DataLoader worker
    processes when it streams (``data.in_memory``), so a ``Rows`` must survive a fork and hold
    no open handle it cannot share. A numpy array or ``np.load(..., mmap_mode="r")`` serves too.
    """

    shape: tuple[int, ...] = (0,)
    dtype: np.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The rows at ``indices`` (int64, any order, maybe repeated), shape ``(len(indices), *shape[1:])``."""
        raise NotImplementedError

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.read(np.array([index], dtype=np.int64))[0]
        return self.read(np.arange(len(self), dtype=np.int64)[index])


@dataclass
class RawData:
    """What a dataset returns: raw inputs (any shape ``(n, ...)``) and labels.

    ``x`` is a numpy array (memory-mapped or not) or :class:`Rows` read on demand. ``value_range``
    (low, high) maps raw values to [0, 1]; the same map is applied to the inputs of
    ``aepipe encode``. uint8 inputs stay uint8 in memory and are scaled batch by batch.
    ``x_test``/``y_test``, when given, are the dataset's own test split; otherwise aepipe
    splits one off.
    """

    x: np.ndarray | Rows
    y: np.ndarray | None
    value_range: tuple[float, float]
    image_shape: tuple[int, ...] | None = None
    n_classes: int = 0
    x_test: np.ndarray | Rows | None = None
    y_test: np.ndarray | None = None
    source: str = ""


class Component:
    """Shared behaviour of every component kind."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

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

    def setup(self, model: AutoEncoder) -> None:
        """Check the assembled model and prepare (override; raise ConfigError on misuse)."""


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

    def forward(self, z: torch.Tensor, y_onehot: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


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
    class_conditional: ClassVar[bool] = False

    def distribution(self, y: torch.Tensor | None = None) -> torch.distributions.Distribution | None:
        return None

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Step:
    """One forward pass, as regularizers see it."""

    model: AutoEncoder
    x: torch.Tensor  # clean inputs (n, d)
    x_tilde: torch.Tensor  # corrupted inputs the encoder saw
    y: torch.Tensor | None  # integer labels (n,) where they exist
    y_onehot: torch.Tensor | None
    encoding: Encoding
    z: torch.Tensor  # codes fed to the decoder, (samples * n, code_dim)
    output: torch.Tensor  # decoder output for z
    training: bool = True


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


def check_component_class(cls: type, source: PluginInfo) -> None:
    """Reject a component class whose ``Config`` is not a :class:`ComponentConfig`."""
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
        raise PluginError(
            f"{source.describe()}: {cls.kind} '{cls.name}' has Config={config!r}; expected a "
            f"subclass of aepipe.components.ComponentConfig",
            plugin=source.name,
        )


def require(condition: bool, message: str) -> None:
    """Raise a :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
