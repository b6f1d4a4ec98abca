"""A run's state as one object, and its checkpoint: tensors and plain data only.

:class:`TrainState` holds everything that decides what the next epoch computes besides the
weights: the epochs done, the best validation value and its weights, epochs without improvement,
the metric history, the random generators and, when a run was stopped between two batches, the
position inside the epoch; and what binds it to its run: the run's id and the digest of the
pipeline the run logged (:mod:`aepipe.training.resume` checks both before a run continues).
:func:`save_checkpoint` writes it with the model's, optimizers' and
schedule's state; :func:`load_checkpoint` reads it back with ``torch.load(weights_only=True)``,
so a checkpoint can never run code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aepipe.errors import ConfigError
from aepipe.files import load_tensors, save_tensors

FORMAT = 2  # bumped when the checkpoint's layout changes


@dataclass
class Position:
    """Where an epoch was stopped: the next batch, the epoch's shuffled order, the sums of its
    metrics so far and the seconds it had run."""

    batch: int
    perm: torch.Tensor
    keys: list[str]
    sums: torch.Tensor | None
    seconds: float


@dataclass
class TrainState:
    """Everything but the weights that the rest of a run depends on."""

    pipeline: str  # the resolved pipeline, as TOML
    run_id: str = ""  # the run this state belongs to ("": a checkpoint older than this field)
    pipeline_digest: str = ""  # resume.pipeline_digest of the pipeline the run logged when it started
    epoch: int = 0  # epochs completed
    best: float = math.inf
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    done: bool = False
    train_seconds: float = 0.0  # training time of the epochs before a resume
    position: Position | None = None
    rng: dict[str, Any] = field(default_factory=dict)

    def record(
        self, epoch: int, metrics: dict[str, float], min_delta: float, patience: int, weights: dict[str, torch.Tensor],
        settled: bool = True,
    ) -> bool:
        """Add an epoch's metrics; keep a copy of ``weights`` when it is the best so far.
        Returns whether training should stop early. While the objective is still annealing (not
        ``settled``), the latest epoch is the best and the next one will be too (``best`` is left at
        infinity): losses of different objectives do not compare, so the first settled epoch starts
        the count afresh."""
        self.epoch = epoch
        self.history.append({"epoch": epoch, **metrics})
        if not settled or metrics["val_loss"] < self.best - min_delta:
            self.best, self.best_epoch, self.bad_epochs = metrics["val_loss"], epoch, 0
            if self.best_weights is None:
                self.best_weights = {k: v.detach().clone() for k, v in weights.items()}
            else:  # copied into the buffers of the last best: no allocation
                for k, v in weights.items():
                    self.best_weights[k].copy_(v)
            if not settled:
                self.best = math.inf
        else:
            self.bad_epochs += 1
        self.stopped_early = bool(patience) and self.bad_epochs >= patience
        return self.stopped_early

    # --- random generators ------------------------------------------------------------------

    def capture_rng(self) -> None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        self.rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
        }

    def restore_rng(self) -> None:
        if not self.rng:
            return
        torch.set_rng_state(self.rng["torch"])
        if self.rng.get("cuda") and torch.cuda.is_available() and len(self.rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(self.rng["cuda"])
        n = self.rng["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))

    # --- to and from plain data -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "position"}
        out["best_weights"] = (
            None if self.best_weights is None else {k: v.detach().cpu() for k, v in self.best_weights.items()}
        )
        out["position"] = None if self.position is None else {
            **asdict(self.position), "perm": self.position.perm.cpu(),
            "sums": None if self.position.sums is None else self.position.sums.cpu()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainState":
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known and k != "position"})
        if data.get("position"):
            state.position = Position(**data["position"])
        return state


def save_checkpoint(path: Path, state: TrainState, parts: dict[str, Any]) -> None:
    """Write ``state`` and ``parts`` (state dicts of the model, optimizers and schedule)
    atomically (:func:`aepipe.files.atomic_write`): a kill while writing leaves the previous
    checkpoint whole, and a failed write (a full disk: one WriteError naming the file and the
    space left) leaves no partial file behind."""
    save_tensors(path, {"format": FORMAT, "state": state.to_dict(), **parts})


def load_checkpoint(path: Path, where: str, name: str | None = None) -> tuple[TrainState, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`. Anything but tensors and plain data
    (a pickled object) is refused before it can run; a damaged file of any size (empty,
    truncated) or one of another layout is one ConfigError naming it (``name``, default its
    path)."""
    name = name or str(path)
    payload = load_tensors(path, where, name)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("state"), dict):
        raise ConfigError(f"{where}: {name} is not an aepipe checkpoint of format {FORMAT}")
    try:
        state = TrainState.from_dict(payload.pop("state"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {name} is damaged: its state does not read back ({str(exc)[:200]})") from None
    return state, payload
