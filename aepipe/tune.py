"""``aepipe tune``: Optuna studies over pipeline settings, every trial a tracked training run.

Optuna does the sampling, pruning and storing. aepipe turns the ``[tune]`` section into a
search space, each trial into an MLflow run nested under one parent run per study, and keeps
the study to exactly ``n_trials`` finished (complete or pruned) trials across any number of
workers: a trial whose worker died is failed (heartbeat on RDB storages; a dead process id on
this machine for any storage) and retried with the same parameters.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aepipe.errors import AepipeError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.plugins import AepipePluginManager

WORKER_ATTR = "aepipe.worker"
COMMAND_ATTR = "aepipe.command"  # the `aepipe tune` command (host:pid) whose worker ran a trial
COMMAND_ENV = "AEPIPE_TUNE_COMMAND"  # tells a worker process which command started it
RUN_ATTR = "aepipe.mlflow_run_id"
PARENT_ATTR = "aepipe.mlflow_parent_run_id"
FAIL_ATTR = "aepipe.fail_reason"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """One search-space entry: ``type`` int, float or categorical."""

    type: Literal["int", "float", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[list[Union[bool, int, float, str]]] = None


class TuneSettings(_Strict):
    """The ``[tune]`` section of a pipeline file."""

    n_trials: int = Field(20, ge=1, description="finished (complete or pruned) trials the study should hold")
    timeout: Optional[float] = Field(None, gt=0, description="seconds after which this invocation starts no new trial")
    metric: Optional[str] = None
    direction: Optional[Literal["minimize", "maximize"]] = None
    metrics: Optional[list[str]] = None
    directions: Optional[list[Literal["minimize", "maximize"]]] = None
    sampler: Literal["tpe", "random", "nsgaii", "qmc", "gp"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    warmup_epochs: int = Field(3, ge=0, description="epochs before the median pruner may prune")
    seed: Optional[int] = 0
    max_failures: Optional[int] = Field(None, ge=1, description="stop after this many failed trials in one worker (default: n_trials)")
    space: dict[str, ParamSpec] = {}

    @model_validator(mode="after")
    def _objectives(self) -> "TuneSettings":
        if self.metrics is not None or self.directions is not None:
            if self.metric is not None or self.direction is not None:
                raise ValueError("give either metric/direction or metrics/directions, not both")
            if not self.metrics or not self.directions or len(self.metrics) != len(self.directions):
                raise ValueError("metrics and directions must be lists of the same length")
        return self

    @property
    def objective_metrics(self) -> list[str]:
        return self.metrics or [self.metric or "val_loss"]

    @property
    def objective_directions(self) -> list[str]:
        return self.directions or [self.direction or "minimize"]


def mask_url(url: str) -> str:
    """The storage URL with its secrets replaced by *** (see :func:`aepipe.secrets.mask`)."""
    from aepipe.secrets import mask

    return mask(url)


def default_storage_url() -> str:
    from aepipe import tracking

    return f"journal:///{tracking.local_root() / 'optuna.journal'}"


def make_storage(url: str):
    """An Optuna storage: ``journal:///path`` (a journal file, safe for several processes on one
    machine), or an RDB URL (``postgresql+psycopg://...`` for many machines) with heartbeats so
    that trials of dead workers are failed and retried."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("journal://"):
        path = Path(url[len("journal://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("postgresql://"):
        raise ConfigError(f"--storage {mask_url(url)}: use postgresql+psycopg://... (SQLAlchemy maps postgresql:// to psycopg2)")
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        # workers started together on a new database all create Optuna's tables; the losers of
        # that race see a duplicate table or type, and find the tables when they try again
        return _retrying(lambda: RDBStorage(
            url,
            heartbeat_interval=5,
            grace_period=20,
            heartbeat_stale_trial_callback=_FailAndEnd(max_retry=3),
            engine_kwargs={"pool_pre_ping": True},
        ), (IntegrityError, ProgrammingError), attempts=4)
    except Exception as exc:  # noqa: BLE001 - connection and URL errors alike
        from aepipe.secrets import mask, secrets_of

        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--storage {mask_url(url)}: cannot open: {mask(message, secrets_of(url))}") from None


def _distribution(key: str, spec: ParamSpec, where: str):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    try:
        if spec.type == "categorical":
            if not spec.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            return CategoricalDistribution(spec.choices)
        if spec.low is None or spec.high is None:
            raise ValueError(f"{spec.type} needs 'low' and 'high'")
        if spec.low > spec.high:
            raise ValueError(f"empty range: low {spec.low} > high {spec.high}")
        if spec.type == "int":
            if spec.low != int(spec.low) or spec.high != int(spec.high):
                raise ValueError("int bounds must be whole numbers")
            return IntDistribution(int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))
        return FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    except ValueError as exc:
        raise ConfigError(f"{where}: [tune.space] '{key}': {exc}") from None


def _probe_values(dist) -> list[Any]:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


@dataclass
class Study:
    """A pipeline's study: settings, Optuna study, MLflow experiment and parent run."""

    pipeline_path: Path
    overrides: tuple[str, ...]
    settings: TuneSettings
    distributions: dict[str, Any]
    name: str
    storage_url: str
    experiment: str = "aepipe"
    study: Any = None
    experiment_id: str = ""
    parent_run_id: str = ""


def prepare(pm: AepipePluginManager, path: str | Path, overrides: tuple[str, ...] = (), study_name: str | None = None,
            storage_url: str | None = None, n_trials: int | None = None) -> Study:
    """Validate the ``[tune]`` section and every search-space entry against the pipeline, before
    any trial runs."""
    from aepipe.config import resolve

    path = Path(path)
    base = resolve(pm, path, overrides)
    raw = base.settings.tune
    if not raw:
        raise ConfigError(f"{path}: no [tune] section: add one with a [tune.space] table (see pipelines/vanilla.toml)")
    try:
        settings = TuneSettings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: [tune] {loc + ': ' if loc else ''}{err['msg']}") from None
    if n_trials is not None:
        settings.n_trials = n_trials
    if not settings.space:
        raise ConfigError(f"{path}: [tune.space] is empty: name at least one setting to search")
    if len(settings.objective_metrics) > 1 and settings.pruner != "none":
        settings.pruner = "none"  # Optuna prunes single-objective studies only
    distributions = {}
    flat = base.flat()
    for key, spec in settings.space.items():
        dist = _distribution(key, spec, str(path))
        for value in _probe_values(dist):
            try:
                probe = resolve(pm, path, overrides, values={key: value}, values_origin="[tune.space]")
            except ConfigError as exc:
                raise ConfigError(f"{path}: [tune.space] '{key}' = {value!r} is not valid here: {exc}") from None
            if key not in probe.flat() and key not in flat:
                raise ConfigError(f"{path}: [tune.space] '{key}' is not a setting of this pipeline")
        distributions[key] = dist
    return Study(path, tuple(overrides), settings, distributions, study_name or path.stem, storage_url or default_storage_url(),
                 experiment=base.settings.tracking.experiment)


def _sampler(settings: TuneSettings, shared: bool = False):
    """Optuna's sampler. Workers sharing a study each draw from their own stream (the seed mixed
    with the process id), or they would all propose the same settings."""
    import optuna

    seed = settings.seed
    if shared:
        seed = ((seed or 0) * 1_000_003 + os.getpid()) % 2**32
    return {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "nsgaii": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }[settings.sampler]()


def _pruner(settings: TuneSettings, epochs: int):
    import optuna

    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=settings.warmup_epochs)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def open_study(st: Study, epochs: int, shared: bool | None = None) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # aepipe drives heartbeats itself around ask/tell (see _Heartbeat)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    logging.getLogger("mlflow.tracking._model_registry").setLevel(logging.ERROR)
    storage = make_storage(st.storage_url)
    directions = st.settings.objective_directions
    try:
        st.study = optuna.create_study(
            study_name=st.name, storage=storage, load_if_exists=True,
            sampler=_sampler(st.settings, shared if shared is not None else not st.storage_url.startswith("journal:")),
            pruner=_pruner(st.settings, epochs),
            directions=directions,
        )
    except ValueError as exc:  # e.g. an existing study with other directions
        raise ConfigError(f"study '{st.name}' in {mask_url(st.storage_url)}: {exc}") from None
    existing = [d.name.lower() for d in st.study.directions]
    if existing != directions:
        raise ConfigError(f"study '{st.name}' exists with directions {existing}; this pipeline asks for {directions}")
    return st.study


def ensure_parent_run(st: Study) -> str:
    """The study's MLflow parent run: found through the study's user attributes (so workers on
    other machines nest under the same run), created by the first worker."""
    from aepipe.tracking import default_tracker

    tracker = default_tracker()
    run_id = st.study.user_attrs.get(PARENT_ATTR)
    if run_id:
        st.parent_run_id = run_id
        record = tracker.get_run(run_id)
        st.experiment_id = record.experiment_id
        if record.status in ("KILLED", "FAILED"):  # its command was stopped: the study goes on
            tracker.reopen(run_id)
        return run_id
    parent = tracker.start(st.experiment, run_name=f"study {st.name}", lease=False, tags={
        "aepipe.study": st.name,
        "aepipe.role": "study",
        "aepipe.tune.storage": mask_url(st.storage_url),
        "aepipe.pipeline": str(st.pipeline_path),
        "mlflow.note.content": f"Optuna study '{st.name}': one child run per trial.",
    })
    st.experiment_id = tracker.get_run(parent.run_id).experiment_id
    st.study.set_user_attr(PARENT_ATTR, parent.run_id)
    time.sleep(0.2)
    chosen = st.study.user_attrs.get(PARENT_ATTR)  # another worker may have won the race
    st.parent_run_id = chosen
    if chosen != parent.run_id:
        tracker.delete_run(parent.run_id)
        return chosen
    space = {k: v.model_dump(exclude_none=True) for k, v in st.settings.space.items()}
    parent.log_text(json.dumps({"space": space, "metrics": st.settings.objective_metrics,
                                "directions": st.settings.objective_directions}, indent=2), "study/space.json")
    parent.log_params({f"tune.{key}": value for key, value in {
        "n_trials": st.settings.n_trials, "sampler": st.settings.sampler, "pruner": st.settings.pruner,
        "metrics": ",".join(st.settings.objective_metrics)}.items()})
    return chosen


def heal(st: Study) -> int:
    """End KILLED the runs of this study still RUNNING whose process is gone (a command or worker
    killed outright); returns how many. Runs held by a live process, here or elsewhere, stay."""
    from aepipe.errors import ConfigError
    from aepipe.tracking import default_tracker
    from aepipe.tracking.base import LEASE_OWNER, check_lease

    tracker = default_tracker()
    healed = 0
    for record in tracker.find_runs(st.experiment_id, {"aepipe.study": st.name}):
        if record.status != "RUNNING" or LEASE_OWNER not in record.tags:
            continue
        try:
            check_lease(record, "heal")
        except ConfigError:  # its process lives: not ours to end
            continue
        if tracker.end_run(record.run_id, "KILLED", f"its process ({record.tags[LEASE_OWNER]}) died; ended when the study ran again"):
            healed += 1
    return healed


def stop_with_parent(poll: float = 1.0) -> None:
    """In a worker process: when the command that started it dies, stop as if sent SIGTERM (the
    trial in training stops between batches, its run KILLED), within ``poll`` seconds or so."""
    import signal

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="aepipe-parent-watch", daemon=True).start()


def end_trial_run(trial, reason: str) -> None:
    """End the MLflow run of a trial whose worker died FAILED, with ``reason``."""
    from aepipe.tracking import default_tracker

    run_id = trial.user_attrs.get(RUN_ATTR)
    if run_id:
        default_tracker().end_run(run_id, "FAILED", reason)


class _FailAndEnd:
    """Optuna's heartbeat callback for a trial whose worker stopped beating: end its run
    FAILED, then retry the trial with the same parameters."""

    def __init__(self, max_retry: int = 3):
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study, trial) -> None:
        end_trial_run(trial, f"worker {trial.user_attrs.get(WORKER_ATTR, '?')} stopped its heartbeat")
        self.retry(study, trial)


def recover_dead_trials(study) -> int:
    """Fail RUNNING trials whose worker process on this machine is gone, and retry each with
    the same parameters (Optuna's heartbeat does this for RDB storages across machines)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
    from optuna.trial import TrialState

    from aepipe.tracking.base import process_alive

    fail_stale_trials(study)
    host = socket.gethostname()
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR, "")
        whost, _, pid = worker.rpartition(":")
        if whost != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "aepipe.fail_reason", f"worker {worker} died")
            if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                end_trial_run(trial, f"worker {worker} died")
                RetryHeartbeatStaleTrialCallback(max_retry=3)(study, study._storage.get_trial(trial._trial_id))
                recovered += 1
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker got there first
    return recovered


class _Heartbeat:
    def __init__(self, storage, trial_id: int):
        from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

        self.enabled = isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            self.storage.record_heartbeat(self.trial_id)
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()
        return self

    def _beat(self):
        interval = self.storage.get_heartbeat_interval()
        while not self.stop.wait(interval):
            self.storage.record_heartbeat(self.trial_id)

    def __exit__(self, *exc):
        self.stop.set()


@dataclass(frozen=True)
class Placement:
    """Where one of ``aepipe tune --n-workers``' workers runs: the environment a child worker
    starts with, and the GPU index this process selects when it is the first worker."""

    env: dict[str, str]
    gpu: int | None
    summary: str


def worker_placement(n_workers: int, device: str, gpus: int, cpu_count: int, visible: str | None) -> list[Placement]:
    """One worker per GPU, round robin, when the device is left to aepipe (``auto``/``cuda``) and
    GPUs exist: child ``i`` sees only GPU ``i % gpus`` of those visible to this process
    (``visible``: this process's CUDA_VISIBLE_DEVICES, whose entries children must keep). A
    named device (``cpu``, ``cuda:1``) is used by every worker as it is. The CPU threads are
    shared out between the workers."""
    threads = str(max(1, cpu_count // n_workers))
    spread = gpus > 0 and device in ("auto", "cuda")
    if not spread:
        return [Placement({"AEPIPE_NUM_THREADS": threads}, None, f"{threads} CPU thread(s) each") for _ in range(n_workers)]
    ids = [v.strip() for v in visible.split(",")][:gpus] if visible else [str(g) for g in range(gpus)]
    return [Placement({"AEPIPE_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ids[i % gpus]}, 0 if i == 0 else None,
                      f"one GPU each, round robin over {gpus}") for i in range(n_workers)]


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class ObjectiveError(ConfigError):
    """The objective metric is not among the run's metrics: no trial can succeed."""


def run_worker(pm: AepipePluginManager, st: Study, device: str | None = None, poll: float = 2.0, echo=print) -> dict[str, int]:
    """Run trials until the study holds ``n_trials`` finished trials (or the timeout passes)."""
    from optuna.trial import TrialState

    from aepipe.config import resolve
    from aepipe.training import Interrupted, train

    study = st.study
    settings = st.settings
    target = settings.n_trials
    max_failures = settings.max_failures or max(3, target)
    metrics, single = settings.objective_metrics, len(settings.objective_metrics) == 1
    worker = f"{socket.gethostname()}:{os.getpid()}"
    started = time.monotonic()
    counts = {"complete": 0, "pruned": 0, "failed": 0}

    while True:
        recover_dead_trials(study)
        if _finished(study) >= target:
            break
        if settings.timeout and time.monotonic() - started > settings.timeout:
            echo(f"timeout of {settings.timeout:.0f}s reached; starting no more trials")
            break
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        if _finished(study) + running >= target and not waiting:
            time.sleep(poll)  # the last trials are running elsewhere; take over any that fail
            continue
        trial = study.ask(st.distributions)
        active = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED))]
        if sorted(active).index(trial.number) >= target:  # another worker took the last slot meanwhile
            study._storage.set_trial_user_attr(trial._trial_id, "aepipe.fail_reason", "surplus: the study already had enough trials")
            study.tell(trial, state=TrialState.FAIL)
            continue
        trial.set_user_attr(WORKER_ATTR, worker)
        trial.set_user_attr(COMMAND_ATTR, command_id())
        if trial.user_attrs.get(FAIL_ATTR):  # a retried trial starts with a clean record
            trial.set_user_attr(FAIL_ATTR, "")
        try:
            state, values, reason = _run_trial(pm, st, trial, device, metrics, single, train, resolve)
        except ObjectiveError as exc:  # no trial of this study can succeed: record this one, stop
            trial.set_user_attr(FAIL_ATTR, str(exc)[:2000])
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Interrupted as exc:  # Ctrl-C or SIGTERM: the trial's run is KILLED; this worker stops
            trial.set_user_attr(FAIL_ATTR, f"interrupted: {exc}"[:2000])
            study.tell(trial, state=TrialState.FAIL)
            raise Interrupted(f"study '{st.name}' stopped during trial {trial.number} (its run marked KILLED); "
                              "run the same `aepipe tune` command again to continue the study") from None
        if state == TrialState.COMPLETE:
            study.tell(trial, values)
            counts["complete"] += 1
        elif state == TrialState.PRUNED:
            study.tell(trial, state=TrialState.PRUNED)
            counts["pruned"] += 1
        else:
            trial.set_user_attr("aepipe.fail_reason", reason[:2000])
            study.tell(trial, state=TrialState.FAIL)
            counts["failed"] += 1
            if counts["failed"] >= max_failures:
                raise AepipeError(f"study '{st.name}': {counts['failed']} trials failed in this worker (last: {reason}); stopping")
        pm.call_plugin_hook("aepipe_trial_end", study=st.name, number=trial.number, state=state.name, values=values,
                            params=dict(trial.params), run_id=trial.user_attrs.get(RUN_ATTR))
        shown = "" if values is None else " ".join(f"{m}={v:.5g}" for m, v in zip(metrics, values))
        echo(f"trial {trial.number}: {state.name.lower()} {shown}{(' (' + reason + ')') if reason else ''}")
    return counts


class _Pruned(Exception):
    run_status = "KILLED"


def _run_trial(pm, st: Study, trial, device, metrics, single, train, resolve):
    """Train one trial; returns (state, values, failure reason)."""
    from optuna.trial import TrialState

    from aepipe.training import Interrupted

    params = dict(trial.params)
    try:
        pipeline = resolve(pm, st.pipeline_path, st.overrides, values=params, values_origin=f"trial {trial.number}:")
    except ConfigError as exc:
        return TrialState.FAIL, None, f"components rejected the sampled settings: {exc}"

    def report(epoch: int, total: int, epoch_metrics: dict[str, float]) -> None:
        missing = [m for m in metrics if m not in epoch_metrics]
        if missing:
            available = ", ".join(sorted(k for k in epoch_metrics if k.startswith("val_")))
            raise ObjectiveError(f"{st.pipeline_path}: [tune] metric '{missing[0]}' is not a per-epoch metric of this pipeline; available: {available}")
        if single:
            trial.report(epoch_metrics[metrics[0]], epoch)
            if trial.should_prune():
                raise _Pruned(f"pruned by Optuna at epoch {epoch}")

    tags = {
        "mlflow.parentRunId": st.parent_run_id,
        "aepipe.study": st.name,
        "aepipe.trial": str(trial.number),
        **{f"aepipe.trial.param.{k}": str(v) for k, v in params.items()},
    }
    pipeline.settings.tracking.run_name = f"{st.name} trial {trial.number}"
    from aepipe.tracking import default_tracker

    tracker = default_tracker()
    pipeline.settings.tracking.experiment = tracker.experiment_name(st.experiment_id)
    started: list[str] = []

    def on_start(run_id: str) -> None:  # known to the study at once: a dead worker's run can be ended
        started.append(run_id)
        trial.set_user_attr(RUN_ATTR, run_id)

    with _Heartbeat(st.study._storage, trial._trial_id):
        try:
            result = train(pipeline, pm, device=device, reporter=report, tags=tags, tracker=tracker, on_start=on_start)
        except _Pruned:
            _tag_trial(tracker, started, "PRUNED")
            return TrialState.PRUNED, None, ""
        except (ObjectiveError, Interrupted):
            _tag_trial(tracker, started, "FAIL")
            raise
        except AepipeError as exc:
            _tag_trial(tracker, started, "FAIL")
            return TrialState.FAIL, None, str(exc)
    best = result.best_epoch()
    values = [best[m] for m in metrics]
    if any(not math.isfinite(v) for v in values):
        _tag_trial(tracker, started, "FAIL")
        return TrialState.FAIL, None, f"objective is not finite: {values}"
    _tag_trial(tracker, started, "COMPLETE", {f"objective.{m}": v for m, v in zip(metrics, values)})
    return TrialState.COMPLETE, values, ""


def _tag_trial(tracker, started: list[str], state: str, metrics: dict[str, float] | None = None) -> None:
    """Record the trial's state (and objective values) on its run, where one was started."""
    if not started:
        return
    run = tracker.open(started[0])
    run.set_tags({"aepipe.trial_state": state})
    if metrics:
        run.log_metrics(metrics, 0)
    run.close()


def best_trials(study) -> list:
    from optuna.trial import TrialState

    if len(study.directions) > 1:
        return study.best_trials
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [study.best_trial] if done else []


def command_id() -> str:
    """This `aepipe tune` command, as ``host:pid`` of its first process (workers it started
    inherit it through the environment)."""
    return os.environ.get(COMMAND_ENV) or f"{socket.gethostname()}:{os.getpid()}"


def records_results(st: Study) -> bool:
    """Whether this command should record the study's results (:func:`finish`). Commands on
    several machines share a study; one records: the one whose workers finished the last trial.
    A command that ran no trial records too (it was started again on a study whose results may
    never have been recorded), and so does each command of a study that ended short of its
    trials (a timeout)."""
    from optuna.trial import TrialState

    me = command_id()
    finished = st.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if len(finished) < st.settings.n_trials or not any(t.user_attrs.get(COMMAND_ATTR) == me for t in finished):
        return True
    last = max(finished, key=lambda t: (t.datetime_complete, t.number))
    return last.user_attrs.get(COMMAND_ATTR) == me


def finish(st: Study, register: bool = True) -> None:
    """Record the study's results on its parent run: best params and values, Optuna's plots,
    and the best trial's model in the Model Registry under the study's name."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from mlflow.exceptions import MlflowException
    from optuna.trial import TrialState

    from aepipe.tracking import default_tracker

    tracker = default_tracker()
    parent = tracker.open(st.parent_run_id)
    study = st.study
    best = best_trials(study)
    metrics = st.settings.objective_metrics
    summary = {
        "study": st.name,
        "finished_trials": _finished(study),
        "states": {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState},
        "best": [{"number": t.number, "values": dict(zip(metrics, t.values)), "params": t.params,
                  "run_id": t.user_attrs.get(RUN_ATTR)} for t in best],
    }
    parent.log_text(json.dumps(summary, indent=2), "study/best_trials.json")
    if best:
        top = best[0]
        tags = {f"best.{k}": str(v) for k, v in top.params.items()}
        tags.update({"best.trial": str(top.number), "best.run_id": top.user_attrs.get(RUN_ATTR, "")})
        # commands on two machines may record the results at the same moment: a tracking
        # server's database then refuses one of two simultaneous first writes of a tag
        _retrying(lambda: parent.set_tags(tags), MlflowException)
        parent.log_metrics({f"best.{m}": v for m, v in zip(metrics, top.values)}, 0)
    figures = []
    try:
        if len(study.directions) == 1:
            figures.append((ovm.plot_optimization_history(study).figure, "study/optimization_history.png"))
        else:
            figures.append((ovm.plot_pareto_front(study, target_names=metrics).figure, "study/pareto_front.png"))
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) >= 2 and len(st.distributions) >= 1:
            target = None if len(study.directions) == 1 else (lambda t: t.values[0])
            figures.append((ovm.plot_param_importances(study, target=target, target_name=metrics[0]).figure, "study/param_importances.png"))
        if len(study.directions) == 1:
            figures.append((ovm.plot_intermediate_values(study).figure, "study/intermediate_values.png"))
    except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn must not lose the study
        parent.set_tags({"aepipe.plot_error": f"{type(exc).__name__}: {exc}"[:500]})
    for fig, name in figures:
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        parent.log_figure(fig, name)
        plt.close(fig)
    if register and best and best[0].user_attrs.get(RUN_ATTR):
        tracker.register_model(st.name, best[0].user_attrs[RUN_ATTR])
    _retrying(lambda: parent.finish("FINISHED"), (MlflowException, AepipeError))


def _retrying(call, retry_on: type[Exception] | tuple[type[Exception], ...], attempts: int = 3):
    """``call()``, tried again after a short random pause while it raises ``retry_on``: for
    writes that processes on several machines may race to make first."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except retry_on:
            if attempt == attempts:
                raise
            time.sleep(0.5 + random.random())


def summary_rows(study, metrics: list[str], limit: int = 10) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) > 1:
        ranked = study.best_trials
    else:
        sign = 1 if study.direction.name == "MINIMIZE" else -1
        ranked = sorted(done, key=lambda t: sign * t.value)
    return [{"trial": t.number, **{m: v for m, v in zip(metrics, t.values)}, **t.params,
             "seconds": t.duration.total_seconds() if t.duration else None, "run_id": t.user_attrs.get(RUN_ATTR, "")}
            for t in ranked[:limit]]
