"""Where the MLflow store lives, and checked run ids and paths inside it.

Default: a SQLite store ``./mlruns/mlflow.db`` and artifacts under ``./mlruns/artifacts``
(MLflow 3.13+ refuses its old file store). ``MLFLOW_TRACKING_URI`` takes over, for example an
``mlflow server`` shared by many workers. ``AEPIPE_HOME`` moves the local folder.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

from aepipe.errors import ConfigError, RunNotFoundError
from aepipe.secrets import mask

#: MLflow run ids (and those of aepipe's in-memory tracker): 32 lowercase hexadecimal digits
RUN_ID = re.compile(r"[0-9a-f]{32}")


def check_run_id(text: str, where: str = "run id") -> str:
    """``text`` if it is a run id, else a one-line ConfigError: nothing built from a command
    line's text reaches the file system before this check."""
    if not isinstance(text, str) or not RUN_ID.fullmatch(text):
        raise ConfigError(f"{where} {text!r}: not a run id (32 hexadecimal digits, as `aepipe train` prints)")
    return text


def local_root() -> Path:
    return Path(os.environ.get("AEPIPE_HOME", "mlruns")).resolve()


def default_tracking_uri() -> str:
    return f"sqlite:///{local_root() / 'mlflow.db'}"


_set_by_us: str | None = None  # MLflow exports the URI it is given to MLFLOW_TRACKING_URI


def tracking_uri() -> str:
    """The user's ``MLFLOW_TRACKING_URI`` if they set one, else aepipe's local store."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env != _set_by_us:
        return env
    return default_tracking_uri()


def uses_local_store() -> bool:
    return tracking_uri() == default_tracking_uri()


def artifact_root() -> str:
    return (local_root() / "artifacts").as_uri()


def inside(root: Path, *parts: str) -> Path:
    """``root / parts``, refused unless it stays inside ``root``."""
    root = root.resolve()
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(f"{'/'.join(parts)!r}: refusing a path outside {root}")
    return path


def checkpoint_dir(run_id: str) -> Path:
    """Where run ``run_id`` keeps its checkpoint while it trains (inside the local store)."""
    return inside(local_root() / "checkpoints", check_run_id(run_id))


def setup():
    """Point MLflow at the store; returns the mlflow module."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # configures its own loggers on import: quieten them afterwards

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # aepipe pickles models on purpose (see training._log_model) and pins torch without "+cpu"
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("mlflow.utils.requirements_utils").setLevel(logging.ERROR)

    global _set_by_us
    uri = tracking_uri()
    if uses_local_store():
        local_root().mkdir(parents=True, exist_ok=True)
        _set_by_us = uri  # remembered so that MLflow's export of it is not taken for the user's choice
    mlflow.set_tracking_uri(uri)
    if uses_local_store() and uri not in _created:
        _create_once(mlflow, uri)
        _created.add(uri)
    return mlflow


_created: set[str] = set()  # local stores this process has seen created and migrated


def _create_once(mlflow, uri: str) -> None:
    """Create and migrate the local SQLite store under a file lock: processes started together
    on a new store (a shell loop with ``&``, a job array, tune workers) would otherwise race
    through MLflow's schema migrations and crash. The first creates it; the others wait, then
    find it current."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        fcntl = None
    with open(local_root() / ".store.lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = mlflow.MlflowClient(uri)
            client.search_experiments(max_results=1)  # the tracking store: created, migrated
            client.search_registered_models(max_results=1)  # the model registry's tables
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


#: Makes the MLflow UI open aepipe's experiments in its model-training view (runs, metrics,
#: charts) rather than the GenAI view (traces) it defaults to since MLflow 3.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def experiment_id(name: str) -> str:
    """The id of experiment ``name``, created (with an explicit artifact location) if missing."""
    mlflow = setup()
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        kwargs = {"artifact_location": artifact_root()} if uses_local_store() else {}
        try:
            return mlflow.create_experiment(name, tags={KIND_TAG: KIND}, **kwargs)
        except Exception:  # another worker created it meanwhile
            found = mlflow.get_experiment_by_name(name)
            if found is None:
                raise
    if KIND_TAG not in found.tags:
        from mlflow import MlflowClient

        MlflowClient().set_experiment_tag(found.experiment_id, KIND_TAG, KIND)
    return found.experiment_id


def get_run(run_id: str):
    mlflow = setup()
    try:
        return mlflow.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing run
        raise RunNotFoundError(f"run '{run_id}' not found in {mask(tracking_uri())}: {str(exc).splitlines()[0]}") from None


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
