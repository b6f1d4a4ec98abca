"""Continuing a run: its checkpoint, read safely, and its own pipeline.

A run continues with the pipeline it was started with, to the epochs it was started with. Only
``--set train.epochs=N`` raises them (a pipeline file's own ``train.epochs`` is the file's, not the
run's); ``--set`` may also change how often checkpoints are written and the device, which change
nothing that is computed. Any other difference between the run's pipeline and a pipeline file
or ``--set`` given with ``--resume`` is an error naming the key.
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from typing import Any

from aepipe.config import Pipeline, flatten, resolve
from aepipe.errors import ConfigError
from aepipe.training.state import TrainState, load_checkpoint

#: settings a resumed run may take from the command line: they change where and how it runs, not
#: what it computes (a run resumed on a machine with less memory may stream what it held)
FREE = ("train.checkpoint_every", "train.checkpoint_seconds", "train.device",
        "data.in_memory", "data.memory_fraction", "data.workers", "data.prefetch")
CHECKPOINT = "checkpoint.pt"


def read_checkpoint(tracker: Any, run_id: str) -> tuple[TrainState, dict[str, Any]]:
    """The run's checkpoint: the local one while it trains, else its logged artifact."""
    local = tracker.checkpoint_dir(run_id) / CHECKPOINT
    where = f"--resume {run_id}"
    if local.is_file():
        return load_checkpoint(local, where)
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.download(run_id, f"checkpoint/{CHECKPOINT}", Path(tmp))
        if path is None:
            raise ConfigError(f"{where}: no checkpoint for this run (looked in {local} and its artifacts)")
        return load_checkpoint(path, where, f"its logged artifact checkpoint/{CHECKPOINT}")


def pipeline_for_resume(pm: Any, run_id: str, state: TrainState, asked: Pipeline | None, overrides: tuple[str, ...] = ()) -> Pipeline:
    """Run ``run_id``'s own pipeline, with ``train.epochs`` raised (and the free settings
    changed) where ``asked`` (a pipeline file with its ``--set``), or ``overrides`` over the
    run's own pipeline, do so."""
    own_tree = tomllib.loads(state.pipeline)
    own = resolve(pm, tree=own_tree, stored=True)
    own.source = asked.source if asked is not None else f"run {run_id}"
    if asked is None and overrides:
        asked = resolve(pm, tree=own_tree, overrides=overrides, stored=True)
        asked.source = f"run {run_id} with --set"
    if asked is None:
        return own
    before, now = flatten(own_tree), asked.flat()
    differ = sorted(k for k in set(before) | set(now) if k != "train.epochs" and k not in FREE and before.get(k) != now.get(k))
    if differ:
        k = differ[0]
        raise ConfigError(
            f"--resume {run_id}: {asked.source} differs from the run's pipeline at {', '.join(differ[:5])} "
            f"({k}: run has {before.get(k)!r}, now {now.get(k)!r}); only train.epochs may change, to train longer"
        )
    own_epochs, asked_epochs = own.settings.train.epochs, asked.settings.train.epochs
    origin = asked.origins.get("train.epochs", "")
    if origin.startswith("--set"):  # only an explicit --set changes the run's epochs; a file's are the file's
        if asked_epochs < own_epochs:
            raise ConfigError(f"--resume {run_id}: {origin} is fewer than the {own_epochs} epochs the run was started with; "
                              "a resumed run can only train longer")
        own.settings.train.epochs = asked_epochs
    for key in FREE:
        section, name = key.split(".")
        setattr(getattr(own.settings, section), name, getattr(getattr(asked.settings, section), name))
    return own
