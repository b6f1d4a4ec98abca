"""What lifecycle hooks see of a run (light: imports no torch, mlflow or optuna)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from aepipe.protocols import Data, Model, Pipeline, State, Tracked


@dataclass
class RunContext:
    """A run as hooks see it: the resolved pipeline, model, data and training state, and helpers
    that write to the run's tracker (MLflow, or an in-memory tracker in tests).

    ``state`` is the :class:`aepipe.training.state.TrainState` (``epoch`` completed,
    ``history``, ``best``, ``best_epoch``...); ``optimizer`` is the model's optimizer,
    ``schedule`` the learning-rate schedule and ``stop`` the request to stop (Ctrl-C, SIGTERM)
    that an epoch checks between batches; ``world`` the processes that train the model together
    (``world.rank``, ``world.size``; one process: size 1).
    """

    config: Pipeline  #: an aepipe.config.Pipeline
    model: Model  #: an aepipe.model.AutoEncoder
    data: Data  #: an aepipe.data.DataBundle
    device: torch.device
    tracked: Tracked  #: an aepipe.tracking.base.TrackedRun
    state: State  #: an aepipe.training.state.TrainState
    optimizer: Any = None
    schedule: Any = None
    stop: Any = None
    amp: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    world: Any = None  #: the processes training this model together (aepipe.training.distributed.World)
    #: ``(x, y) -> model.step(x, y, training=True)`` as the run takes it: on several processes
    #: through DistributedDataParallel (None: call the model's own step)
    train_step: Any = None
    #: ``(run, epoch) -> metrics``: aepipe's own training epoch, what the default
    #: ``aepipe_train_epoch`` calls (a plugin's implementation may call it too)
    default_epoch: Any = None

    @property
    def run_id(self) -> str:
        return self.tracked.run_id

    @property
    def history(self) -> list[dict[str, float]]:
        return self.state.history

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics at ``step`` (an epoch; 0 for final values), batched with the run's own."""
        self.tracked.log_metrics({k: float(v) for k, v in metrics.items()}, step or 0)

    def log_params(self, params: dict[str, Any]) -> None:
        self.tracked.log_params(params)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib figure as a PNG artifact (the figure is closed afterwards)."""
        self.tracked.log_figure(figure, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.tracked.log_text(text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.tracked.log_artifact(Path(path), artifact_path)
