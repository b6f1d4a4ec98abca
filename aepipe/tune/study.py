"""A study: its preparation (the ``[tune]`` settings, typed with the rest of the pipeline in
:mod:`aepipe.config`, and its search space checked against the pipeline before any trial runs),
its identity, the command that runs it, how many of its trials are done, and the retry of writes
that several processes race to make. Light: imports no Optuna at module level."""

from __future__ import annotations

import os
import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aepipe.config import ParamSpec, TuneSettings
from aepipe.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.plugins import AepipePluginManager

#: what aepipe keeps on each Optuna trial and study
WORKER_ATTR = "aepipe.worker"  # host:pid of the worker that ran a trial
COMMAND_ATTR = "aepipe.command"  # the `aepipe tune` command (host:pid) whose worker ran a trial
COMMAND_ENV = "AEPIPE_TUNE_COMMAND"  # tells a worker process which command started it
RUN_ATTR = "aepipe.mlflow_run_id"
PARENT_ATTR = "aepipe.mlflow_parent_run_id"
FAIL_ATTR = "aepipe.fail_reason"


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
    #: the resolved pipeline without any trial's values (its train settings: epochs, device)
    base: Any = None
    #: the data this process's trials train on, read once (see :class:`aepipe.training.Trainer`)
    data_cache: dict = field(default_factory=dict)


def prepare(pm: AepipePluginManager, path: str | Path, overrides: tuple[str, ...] = (), study_name: str | None = None,
            storage_url: str | None = None, n_trials: int | None = None) -> Study:
    """Validate the ``[tune]`` section and every search-space entry against the pipeline, before
    any trial runs."""
    from aepipe.config import resolve
    from aepipe.secrets import check_url

    check_url(storage_url, "--storage")
    path = Path(path)
    base = resolve(pm, path, overrides)
    settings = base.settings.tune
    if settings is None:
        raise ConfigError(f"{path}: no [tune] section: add one with a [tune.space] table (see pipelines/vanilla.toml)")
    settings = settings.model_copy(deep=True)
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
                 experiment=base.settings.tracking.experiment, base=base)


def default_storage_url() -> str:
    from aepipe import tracking

    return f"journal:///{tracking.local_root() / 'optuna.journal'}"


def mask_url(url: str) -> str:
    """The storage URL with its secrets replaced by *** (see :func:`aepipe.secrets.mask`)."""
    from aepipe.secrets import mask

    return mask(url)


def command_id() -> str:
    """This `aepipe tune` command, as ``host:pid`` of its first process (workers it started
    inherit it through the environment)."""
    return os.environ.get(COMMAND_ENV) or f"{socket.gethostname()}:{os.getpid()}"


def finished_count(study) -> int:
    """Trials that count towards ``n_trials``: complete or pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def retrying(call, retry_on: type[Exception] | tuple[type[Exception], ...], attempts: int = 3):
    """``call()``, tried again after a short random pause while it raises ``retry_on``: for
    writes that processes on several machines may race to make first."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except retry_on:
            if attempt == attempts:
                raise
            time.sleep(0.5 + random.random())
