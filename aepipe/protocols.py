"""What the plugin contract needs of the layers above it, named as protocols (light: imports no
torch at run time).

The component bases and the run context name the model, the pipeline, the data, the tracker
and the training state that aepipe hands to plugins; they name them through these protocols,
which list only what plugins use, so that the contract imports nothing above itself (not even
for typing). :class:`aepipe.model.AutoEncoder`, :class:`aepipe.config.Pipeline`,
:class:`aepipe.data.DataBundle`, :class:`aepipe.tracking.base.TrackedRun` and
:class:`aepipe.training.state.TrainState` satisfy them (``tests/test_layers.py`` checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pathlib import Path

    import torch

    from aepipe.datatypes import Code, Encoding, ModelSpec


@runtime_checkable
class Model(Protocol):
    """The assembled model as components see it (``setup``, ``epoch_metrics``, ``fit``,
    ``step.model``): its parts, its likelihood and the passes a component may run."""

    spec: ModelSpec
    #: the parts, by section: ``encoder``, ``bottleneck`` (a pass-through without one), ``decoder``,
    #: ``corruption``, ``prior`` and ``sampler`` (None where absent), ``regularizers`` (by key)
    encoder: Any
    bottleneck: Any
    decoder: Any
    corruption: Any
    prior: Any
    sampler: Any
    regularizers: Any
    #: the reconstruction term: ``likelihood.nll(output, target)`` per input
    likelihood: Any
    #: draws of z per input in training (``model.samples``)
    samples: int
    training: bool

    def one_hot(self, y: torch.Tensor | None) -> torch.Tensor | None: ...
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None, samples: int = 1) -> Code: ...
    def probe(self, features: bool = False) -> Code | Encoding: ...
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...
    def parameters(self, recurse: bool = True) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...


@runtime_checkable
class Pipeline(Protocol):
    """A resolved pipeline as hooks see it (``run.config``)."""

    source: str  #: the file it was read from ("<defaults>" for none)
    settings: Any  #: the core sections' typed settings (``settings.train.epochs``...)
    dataset: Any  #: the chosen dataset: ``.name``, ``.config``
    components: dict[str, Any]  #: the chosen model parts by section: ``.name``, ``.config``
    regularizers: dict[str, Any]  #: the chosen regularizers by key

    def as_dict(self) -> dict[str, Any]: ...
    def flat(self) -> dict[str, Any]: ...


@runtime_checkable
class Data(Protocol):
    """The splits of one dataset on one device (``run.data``; ``final_metrics``' ``data``):
    each split has ``x`` and ``y`` tensors (``y`` None without labels) and ``factors``."""

    name: str
    train: Any
    val: Any
    test: Any
    value_range: tuple[float, float]
    image_shape: tuple[int, ...] | None
    n_classes: int
    input_dim: int


@runtime_checkable
class Tracked(Protocol):
    """The run's tracker as hooks reach it through :class:`aepipe.context.RunContext`."""

    run_id: str

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_figure(self, figure: Any, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


@runtime_checkable
class State(Protocol):
    """What a run's training state says to hooks (``run.state``)."""

    epoch: int  #: epochs completed
    best: float
    best_epoch: int
    history: list[dict[str, float]]
    stopped_early: bool


@runtime_checkable
class PluginSource(Protocol):
    """Where a component came from, for error messages: the plugin's ``name`` and a
    ``describe()`` naming its distribution, version and entry point."""

    name: str

    def describe(self) -> str: ...
