"""MLflow tracking: where the store lives and how runs are opened.

Default: a SQLite store ``./mlruns/mlflow.db`` and artifacts under ``./mlruns/artifacts``
(MLflow 3.13+ refuses its old file store). ``MLFLOW_TRACKING_URI`` takes over, for example an
``mlflow server`` shared by many workers. ``AEPIPE_HOME`` moves the local folder.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from aepipe.errors import RunNotFoundError


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


def checkpoint_path(run_id: str) -> Path:
    return local_root() / "checkpoints" / run_id / "checkpoint.pt"


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
    return mlflow


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
        raise RunNotFoundError(f"run '{run_id}' not found in {tracking_uri()}: {str(exc).splitlines()[0]}") from None


def load_model(run_id: str, device: str = "cpu"):
    """The run's trained model (logged with MLflow's PyTorch flavour)."""
    get_run(run_id)
    mlflow = setup()
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/model", map_location=device)
    except Exception as exc:  # noqa: BLE001
        raise RunNotFoundError(f"run '{run_id}' has no loadable model: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
