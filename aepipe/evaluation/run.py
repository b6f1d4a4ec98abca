"""The ``evaluate`` use case: the ``eval_*`` metrics of trained models, logged to their runs.

:func:`evaluate` judges stored runs (run ids, study names, experiment names) with
:func:`aepipe.evaluation.measure.compute`, logs the metrics to each run and keeps the results as the run's artifact
``evaluation/<key>.json``, where ``key`` is a digest of the settings and of the state of what they
measure (:func:`state_digests`: the model's files and those of every sampler ``fit-sampler``
logged): a second call with the same settings on the same model and samplers reads them back and
computes nothing; a model trained further or a sampler fitted again is measured again.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from aepipe.errors import ConfigError, RunNotFoundError
from aepipe.evaluation.measure import chosen_groups, compute, settings

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.config import EvaluateSettings
    from aepipe.data import DataBundle
    from aepipe.model import AutoEncoder

#: bumped when a metric's definition changes: cached results of older definitions are not reused.
#: A feature space that changes bumps its own ``version`` class attribute instead (part of the key
#: of every evaluation that uses it: :func:`space_versions`), which leaves the others' entries valid.
VERSION = 3  # 3: the domain feature space joined by its random probe (issue 31)
FOLDER = "evaluation"


@dataclass
class Evaluation:
    """One run's evaluation: its metrics (``eval_*``), the groups that did not apply and why,
    whether it was read from the cache, and the seconds it took."""

    run_id: str
    metrics: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    seconds: float = 0.0


# --- stored runs --------------------------------------------------------------------------------


#: metrics a run logs when its training ends: a run trained further (``train --resume``) has new ones
TRAINED = ("epochs_trained", "train_seconds")


def cache_key(s: EvaluateSettings, groups: dict[str, tuple[str, ...]], trained: dict[str, float] | None = None,
              states: dict[str, str] | None = None, spaces: dict[str, Any] | None = None) -> str:
    """A digest of everything that decides the results: the settings, the groups, ``trained``
    (the run's :data:`TRAINED` metrics, which change when the model is trained further),
    ``states`` (:func:`state_digests`: the model's and the samplers' files) and ``spaces``
    (:func:`space_versions`: each feature space the generation group uses, with its version)."""
    text = json.dumps({"version": VERSION, "groups": groups, **s.model_dump(exclude={"metrics"}),
                       **({"trained": trained} if trained else {}), **({"states": states} if states else {}),
                       **({"spaces": spaces} if spaces else {})}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def space_versions(s: EvaluateSettings, groups: dict[str, tuple[str, ...]], pm: Any) -> dict[str, Any]:
    """``{name: version}`` of the feature spaces the evaluation uses (none without the generation
    group): each registered class's ``version`` attribute (None where it has none)."""
    if "generation" not in groups:
        return {}
    return {name: getattr(pm.registry.get("feature", name), "version", None) for name in s.features}


def _files_digest(folder: Path) -> str:
    """A digest of every file under ``folder``: its path there and its bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def state_digests(run_id: str, samplers: list[str], tracker: Any) -> dict[str, str]:
    """The state of what an evaluation of ``run_id`` measures, as digests of its files: the
    model's (its weights, the pipeline it was built from) and, for each of ``samplers``, the one
    ``fit-sampler`` logged (``"none logged"`` where the run holds none: it is then the model's
    own, its prior, or fitted for the evaluation from the model and data, which the model's
    digest and the settings already decide). Read without building anything."""
    from aepipe.artifacts import DIR
    from aepipe.sampling import FOLDER as SAMPLERS

    states: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        local = tracker.download(run_id, DIR, Path(tmp))
        states["model"] = "missing" if local is None else _files_digest(local)
        for k, name in enumerate(samplers):
            (Path(tmp) / str(k)).mkdir()
            folder = tracker.download(run_id, f"{SAMPLERS}/{name}", Path(tmp) / str(k))
            states[f"sampler {name}"] = "none logged" if folder is None else _files_digest(folder)
    return states


def run_ids(targets: list[str]) -> list[str]:
    """The finished runs named by ``targets`` (:func:`aepipe.compare.pick`): run ids, study names
    (every finished trial) and experiment names (the latest finished run of each variant there).
    An unknown target is one line."""
    from aepipe.compare import pick

    ids: list[str] = []
    for picked in pick(list(targets), [], trials=True, experiment_targets=True):
        if picked.run.info.run_id not in ids:
            ids.append(picked.run.info.run_id)
    return ids


def _load(run_id: str, device: Any, tracker: Any, pm: Any) -> tuple[AutoEncoder, DataBundle]:
    """Run ``run_id``'s model and its data, split as it was."""
    from aepipe.artifacts import DIR, load_model_and_pipeline
    from aepipe.tracking.lookup import missing_artifact
    from aepipe.training.setup import load_data

    record = tracker.get_run(run_id)
    if record.status != "FINISHED":
        raise RunNotFoundError(f"run {run_id} is {record.status}, not FINISHED: only finished runs are evaluated")
    with tempfile.TemporaryDirectory() as tmp:
        local = tracker.download(run_id, DIR, Path(tmp))
        if local is None:
            location = tracker.artifact_location(run_id) if hasattr(tracker, "artifact_location") else None
            raise RunNotFoundError(
                missing_artifact(record, DIR, location) + " (trained with tracking.log_model = false?)"
            )
        model, pipeline = load_model_and_pipeline(local, pm, str(device), where=f"run {run_id}")
    return model, load_data(pipeline, device)


def _cached(run_id: str, digest: str, tracker: Any) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        found = tracker.download(run_id, f"{FOLDER}/{digest}.json", Path(tmp))
        if found is None:
            return None
        try:
            return json.loads(found.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a damaged cache entry is recomputed


def evaluate_run(run_id: str, s: EvaluateSettings, groups: dict[str, tuple[str, ...]], device: Any = "auto",
                 tracker: Any = None, pm: Any = None, step: Callable[[str], None] | None = None) -> Evaluation:
    """One run's evaluation: read from its cache, or computed, logged (``eval_*`` at step 0) and cached."""
    from aepipe.plugins import get_plugin_manager
    from aepipe.runs import load_sampler
    from aepipe.tracking import default_tracker
    from aepipe.training.device import select_device

    tracker = tracker or default_tracker()
    pm = pm or get_plugin_manager()
    started = time.perf_counter()
    record = tracker.get_run(run_id)
    if record.status != "FINISHED":  # before the cache: a run trained further is RUNNING meanwhile
        raise RunNotFoundError(f"run {run_id} is {record.status}, not FINISHED: only finished runs are evaluated")
    names = list(s.samplers) if "generation" in groups else []
    for name in names:  # a registered name before any path is built from it
        if name != "prior":
            try:
                pm.registry.get("sampler", name)
            except ConfigError as exc:
                raise ConfigError(f"--sampler: {exc}") from None
    states = state_digests(run_id, names, tracker)
    digest = cache_key(s, groups, {k: record.metrics[k] for k in TRAINED if k in record.metrics}, states,
                       space_versions(s, groups, pm))
    hit = _cached(run_id, digest, tracker)
    if hit is not None:
        if hit["metrics"]:  # the run shows what this call reports, whatever another call logged since
            run = tracker.open(run_id)
            try:
                run.log_metrics(hit["metrics"], 0)
            finally:
                run.close()
        return Evaluation(
            run_id, hit["metrics"], hit.get("skipped", {}), cached=True, seconds=time.perf_counter() - started
        )
    dev = select_device(device) if isinstance(device, str) else device
    model, data = _load(run_id, dev, tracker, pm)
    samplers = {name: load_sampler(run_id, model, name, tracker, pm, fit_on=data.train) for name in s.samplers} \
        if "generation" in groups else {}
    metrics, skipped = compute(model, data, s, groups, samplers, pm, step)
    run = tracker.open(run_id)
    try:
        if metrics:
            run.log_metrics(metrics, 0)
        record = {"settings": s.model_dump(), "groups": groups, "metrics": metrics, "skipped": skipped,
                  "version": VERSION}
        run.log_text(json.dumps(record, indent=2, sort_keys=True), f"{FOLDER}/{digest}.json")
    finally:
        run.close()
    return Evaluation(run_id, metrics, skipped, cached=False, seconds=time.perf_counter() - started)


def evaluate(targets: list[str], s: EvaluateSettings | None = None, device: Any = "auto", tracker: Any = None,
             pm: Any = None, progress: bool = False) -> list[Evaluation]:
    """Evaluate every finished run that ``targets`` name (run ids, studies, experiments) with
    settings ``s`` (default: every group that applies, ``[evaluate]``'s defaults otherwise)."""
    from aepipe import tracking
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking.health import check_writable
    from aepipe.training.device import select_device

    if tracker is None:
        check_writable("evaluate")
    if isinstance(device, str):  # now, not after a cache hit or a first run's evaluation
        try:
            select_device(device)
        except ConfigError as exc:  # its message names the pipeline setting; here it is the option
            raise ConfigError(str(exc).replace("train.device:", "--device:")) from None
    s = s or settings()
    groups = chosen_groups(s, everything=True)
    tracking.setup()
    tracker = tracker or tracking.default_tracker()
    pm = pm or get_plugin_manager()
    ids = run_ids(targets)
    if not progress:
        return [evaluate_run(r, s, groups, device, tracker, pm) for r in ids]
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("evaluating", total=len(ids) * len(groups))
        for run_id in ids:
            done = len(results) * len(groups)

            def step(stage: str, run_id: str = run_id) -> None:
                bar.update(task, description=f"{run_id[:8]}: {stage}")
                bar.advance(task)

            results.append(evaluate_run(run_id, s, groups, device, tracker, pm, step))
            bar.update(task, completed=done + len(groups))
    return results


__all__ = ["Evaluation", "compute", "evaluate", "evaluate_run", "settings", "run_ids", "cache_key", "chosen_groups",
           "state_digests", "space_versions"]
