"""Continuing a run: its checkpoint, read safely and bound to the run, and its own pipeline.

A run continues with the pipeline it was started with, to the epochs it was started with. Only
``--set train.epochs=N`` raises them (a pipeline file's own ``train.epochs`` is the file's, not the
run's); ``--set`` may also change how often checkpoints are written and the device, which change
nothing that is computed. Any other difference between the run's pipeline and a pipeline file
or ``--set`` given with ``--resume`` is an error naming the key.

The run's pipeline is the one it logged when it started (its artifact ``pipeline.toml``), not
the copy inside its checkpoint. A checkpoint records the run it belongs to and a digest of that
pipeline (:func:`pipeline_digest`: every key but the epochs and the :data:`FREE` settings); a
checkpoint of another run, or of another pipeline, is refused before anything is written. Only
the epochs an earlier ``--resume`` raised and the free settings it ran with are taken from the
checkpoint. A checkpoint written before checkpoints recorded their run (no run id, no digest)
is accepted when the pipeline inside it has the logged pipeline's digest.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from aepipe.config import Pipeline, flatten, unflatten
from aepipe.config.reading import read_text
from aepipe.config.stored import StoredPipeline
from aepipe.errors import ConfigError
from aepipe.training.state import TrainState, load_checkpoint

#: settings a resumed run may take from the command line: they change where and how it runs, not
#: what it computes (a run resumed on a machine with less memory may stream what it held)
FREE = ("train.checkpoint_every", "train.checkpoint_seconds", "train.device",
        "data.in_memory", "data.memory_fraction", "data.workers", "data.prefetch")
CHECKPOINT = "checkpoint.pt"
#: the run's resolved pipeline, logged when it starts: what a resumed run computes
LOGGED = "pipeline.toml"
#: keys of a run's pipeline that may change while it is resumed (and are not in its digest)
CHANGEABLE = ("train.epochs", *FREE)


def _identity(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(tree).items() if k not in CHANGEABLE}


def pipeline_digest(text: str, where: str = "the pipeline") -> str:
    """SHA-256 of the resolved pipeline in TOML ``text``: every dotted key and value but those
    a resumed run may change (:data:`CHANGEABLE`), in a canonical order."""
    canonical = json.dumps(
        _identity(StoredPipeline.loads(text, where).tree), sort_keys=True, default=str, ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def bind(state: TrainState, run_id: str, text: str) -> None:
    """Mark a new run's state as run ``run_id``'s, whose pipeline is TOML ``text`` (what it logs)."""
    state.run_id, state.pipeline_digest = run_id, pipeline_digest(text)


def logged_pipeline(tracker: Any, run_id: str, where: str) -> str:
    """The TOML text of the pipeline run ``run_id`` logged when it started, read within the bounds
    of a pipeline file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.download(run_id, LOGGED, Path(tmp))
        if path is None or not path.is_file():
            raise ConfigError(f"{where}: run {run_id} has no logged {LOGGED} (the pipeline it was started with), "
                              "so its checkpoint cannot be checked against it; start the run again")
        return read_text(path, f"{where}: run {run_id}'s logged {LOGGED}")


def check_binding(state: TrainState, run_id: str, logged: str, where: str) -> None:
    """Refuse, in one line, a checkpoint that is not run ``run_id``'s: one that records another
    run, or whose pipeline digest is not that of the run's logged pipeline ``logged``. An old
    checkpoint (no run id) is judged by the digest of the pipeline inside it; once accepted,
    ``state`` is bound to the run, so the checkpoints it writes from now on record it."""
    if state.run_id and state.run_id != run_id:
        raise ConfigError(
            f"{where}: its checkpoint is run {state.run_id}'s, not run {run_id}'s (copied from another run?); "
            f"refusing to continue run {run_id} from it"
        )
    expected = pipeline_digest(logged, _logged(where, run_id))
    found = state.pipeline_digest or pipeline_digest(state.pipeline, _inside(where))
    if found != expected:
        ours = _identity(StoredPipeline.loads(logged, _logged(where, run_id)).tree)
        theirs = _identity(StoredPipeline.loads(state.pipeline, _inside(where)).tree)
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        at = (f" (first at {differ[0]}: run has {_value(ours.get(differ[0]))}, checkpoint "
              f"{_value(theirs.get(differ[0]))})"
              if differ else f" (digest {found[:12]}, the run's {expected[:12]})")
        raise ConfigError(f"{where}: its checkpoint was written for another pipeline than run {run_id}'s logged "
                          f"{LOGGED}{at}; refusing to continue the run from it")
    state.run_id, state.pipeline_digest = run_id, expected


def _logged(where: str, run_id: str) -> str:
    return f"{where}: run {run_id}'s logged {LOGGED}"


def _inside(where: str) -> str:
    return f"{where}: the pipeline inside its checkpoint"


def _value(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}..."


def read_checkpoint(tracker: Any, run_id: str) -> tuple[TrainState, dict[str, Any], str]:
    """The run's checkpoint (the local one while it trains, else its logged artifact), checked
    to be the run's (:func:`check_binding`), and the run's logged pipeline."""
    local = tracker.checkpoint_dir(run_id) / CHECKPOINT
    where = f"--resume {run_id}"
    if local.is_file():
        state, parts = load_checkpoint(local, where)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = tracker.download(run_id, f"checkpoint/{CHECKPOINT}", Path(tmp))
            if path is None:
                raise ConfigError(f"{where}: no checkpoint for this run (looked in {local} and its artifacts)")
            state, parts = load_checkpoint(path, where, f"its logged artifact checkpoint/{CHECKPOINT}")
    logged = logged_pipeline(tracker, run_id, where)
    check_binding(state, run_id, logged, where)
    return state, parts, logged


def pipeline_for_resume(pm: Any, run_id: str, state: TrainState, logged: str, asked: Pipeline | None,
                        overrides: tuple[str, ...] = ()) -> Pipeline:
    """Run ``run_id``'s own pipeline: its ``logged`` one (TOML), with the epochs and free
    settings its checkpoint ``state`` ran with (an earlier ``--resume`` may have changed them),
    with ``train.epochs`` raised (and the free settings changed) where ``asked`` (a pipeline file
    with its ``--set``), or ``overrides`` over the run's own pipeline, do so."""
    where = f"--resume {run_id}"
    own_tree = StoredPipeline.loads(logged, _logged(where, run_id)).tree
    ran = flatten(StoredPipeline.loads(state.pipeline, _inside(where)).tree)
    for key, value in unflatten({k: ran[k] for k in CHANGEABLE if k in ran}).items():
        own_tree[key] = {**own_tree.get(key, {}), **value}
    own = StoredPipeline(own_tree, f"run {run_id}").resolve(pm)
    own.source = asked.source if asked is not None else f"run {run_id}"
    if asked is None and overrides:
        asked = StoredPipeline(own_tree, f"run {run_id}").resolve(pm, overrides)
        asked.source = f"run {run_id} with --set"
    if asked is None:
        return own
    before, now = flatten(own_tree), asked.flat()
    differ = sorted(
        k for k in set(before) | set(now) if k != "train.epochs" and k not in FREE and before.get(k) != now.get(k)
    )
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
            raise ConfigError(
                f"--resume {run_id}: {origin} is fewer than the {own_epochs} epochs the run was started with; "
                "a resumed run can only train longer"
            )
        own.settings.train.epochs = asked_epochs
    for key in FREE:
        section, name = key.split(".")
        setattr(getattr(own.settings, section), name, getattr(getattr(asked.settings, section), name))
    return own
