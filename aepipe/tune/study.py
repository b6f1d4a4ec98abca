"""A study: its preparation (the ``[tune]`` settings, typed with the rest of the pipeline in
:mod:`aepipe.config`, and its search space checked against the pipeline before any trial runs),
its identity, the command that runs it, how many of its trials are done, and the retry of writes
that several processes race to make. Light: imports no Optuna at module level."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aepipe.config import ParamSpec, TuneSettings, name_problem
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
FINGERPRINT_ATTR = "aepipe.fingerprint"  # what makes the study's trials comparable (see fingerprint)
FINGERPRINT_TAG = "aepipe.fingerprint"  # its digest, on the parent run

#: settings that say how much of a study to run (its budgets: trials, time, epochs), where, how
#: fast and what to log, not what its trials are: they may change between two commands of one
#: study (prefixes of dotted keys), but for :data:`BOUND_SETTINGS`
FREE_SETTINGS = ("tune.", "description", "train.device", "train.epochs", "train.checkpoint_", "train.compile",
                 "tracking.")
#: where the trials' runs go: never changed under a study
BOUND_SETTINGS = ("tracking.experiment",)


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
    #: what makes the trials comparable (see :func:`fingerprint`)
    fingerprint: dict = field(default_factory=dict)
    #: what :func:`hold_to_fingerprint` found to record on the parent run: (tag value, note), empty if nothing
    binding_notes: list = field(default_factory=list)
    #: lines for the user that nothing records (see :func:`aepipe.usecases.tune.open_pipeline_study`)
    hints: list = field(default_factory=list)


def prepare_study(pm: AepipePluginManager, path: str | Path, overrides: tuple[str, ...] = (),
                  study_name: str | None = None, storage_url: str | None = None, n_trials: int | None = None) -> Study:
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
    experiment = base.settings.tracking.experiment
    if study_name is not None:
        if problem := name_problem(study_name):
            shown = repr(study_name) if len(study_name) <= 80 else f"{study_name[:60]!r}..."
            raise ConfigError(f"--study {shown} {problem}")
        name = study_name
    else:
        name = settings.study or default_name(experiment, path)
    st = Study(path, tuple(overrides), settings, distributions, name, storage_url or default_storage_url(),
               experiment=experiment, base=base)
    st.fingerprint = fingerprint(st)
    return st


def default_name(experiment: str, path: Path) -> str:
    """The study of ``path`` when neither ``--study`` nor ``[tune] study`` names it: the file's
    name where the experiment is named like the file (pipelines/vae.toml in experiment "vae"),
    else ``EXPERIMENT-FILE`` (two plugins' pipeline.toml in their own experiments), made a
    valid study name."""
    stem = path.stem
    name = stem if experiment == stem else f"{experiment}-{stem}"
    name = re.sub(r"[/:%\\\s]+", "-", name).strip("-")[:150] or "study"
    if name_problem(name):  # the look of a run id
        name = f"study-{name}"
    return name


def fingerprint(st: Study) -> dict[str, Any]:
    """What makes a study's trials comparable: the resolved pipeline but for the tuned keys and
    the settings of how much to run, where and what to log (:data:`FREE_SETTINGS`); the
    objective metrics and directions; the search space."""
    pipeline = {key: value for key, value in st.base.flat().items()
                if key not in st.distributions and (key in BOUND_SETTINGS or not key.startswith(FREE_SETTINGS))}
    space = {key: spec.model_dump(exclude_none=True) for key, spec in st.settings.space.items()}
    found = {"pipeline": pipeline, "objective": {"metrics": list(st.settings.objective_metrics),
                                                 "directions": list(st.settings.objective_directions)}, "space": space}
    return json.loads(json.dumps(found, sort_keys=True, default=str))  # as the storage gives it back


def digest(found: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    """The keys whose values differ, as ``key old -> new``: the variant, the data and the
    components' names before their settings."""
    unset = object()
    order = sorted(set(old) | set(new), key=lambda k: (k.count("."), not k.endswith(".name"), k))
    keys = [k for k in order if old.get(k, unset) != new.get(k, unset)]
    shown = [
        f"{k} {_shown_setting(old.get(k, unset), unset)} -> {_shown_setting(new.get(k, unset), unset)}"
        for k in keys[:limit]
    ]
    return ", ".join(shown) + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def _shown_setting(value: Any, unset: object) -> str:
    if value is unset:
        return "(unset)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def hold_to_fingerprint(st: Study, allow_new_space: bool = False) -> None:
    """Hold the opened study to what it tunes: a study records its :func:`fingerprint` when it
    is created; reopened with another one, it is refused in one line naming what differs and
    how to go on (a new ``--study`` name; ``--allow-new-space`` for a changed search space
    alone, which is then recorded on the parent run). A changed objective or pipeline never
    joins. A study made before fingerprints were kept takes this one, with a note."""
    from aepipe.secrets import mask

    old = st.study.user_attrs.get(FINGERPRINT_ATTR)
    new = st.fingerprint
    where = f"study '{st.name}' in {mask(st.storage_url)}"
    new_name = "run it as a new study with --study NEW_NAME (or [tune] study)"
    if not old:
        if st.study.trials:
            st.binding_notes.append(("recorded on reopen",
                                     f"{where} was made before aepipe recorded what a study tunes; "
                                     "its trials are taken to tune this pipeline, whose fingerprint it holds from now "
                                     "on"))
        st.study.set_user_attr(FINGERPRINT_ATTR, new)
        return
    if old.get("objective") != new["objective"]:
        raise ConfigError(
            f"{where} optimises {_objective(old['objective'])}; this pipeline asks for "
            f"{_objective(new['objective'])}: trials of another objective are not comparable, so a changed "
            f"objective never joins a study; {new_name}"
        )
    if old.get("pipeline") != new["pipeline"]:
        raise ConfigError(f"{where} tunes another pipeline: {_differences(old.get('pipeline', {}), new['pipeline'])}; "
                          f"its trials are not comparable with this pipeline's; {new_name}")
    if old.get("space") != new["space"]:
        changed = _differences(old.get("space", {}), new["space"])
        if not allow_new_space:
            raise ConfigError(f"{where} searched another space: {changed}; pass --allow-new-space to go on with this "
                              f"space (recorded on the study's parent run), or {new_name}")
        st.binding_notes.append(("space changed", f"search space changed: {changed}"))
        st.study.set_user_attr(FINGERPRINT_ATTR, new)


def _objective(objective: dict[str, Any]) -> str:
    return ", ".join(f"{m} ({d})" for m, d in zip(objective.get("metrics", []), objective.get("directions", [])))


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
