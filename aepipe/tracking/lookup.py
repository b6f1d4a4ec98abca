"""Experiments and runs looked up in the store by name and id, and why a run's artifact is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aepipe.errors import RunNotFoundError
from aepipe.secrets import mask
from aepipe.tracking.error_line import error_line
from aepipe.tracking.health import check_writable
from aepipe.tracking.store import artifact_root, connect, tracking_uri, uses_local_store

#: Makes the MLflow UI open aepipe's experiments in its model-training view (runs, metrics,
#: charts) rather than the GenAI view (traces) it defaults to since MLflow 3.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def experiment_id(name: str) -> str:
    """The id of experiment ``name``, created (with an explicit artifact location) if missing."""
    mlflow = connect()
    check_writable()
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
    mlflow = connect()
    try:
        return mlflow.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing run
        raise RunNotFoundError(f"run '{run_id}' not found in {mask(tracking_uri())}: {error_line(exc)}") from None


def local_path(location: str | None) -> Path | None:
    """The folder of a ``file:`` artifact location (or a plain path); None for a remote one."""
    if not location:
        return None
    if location.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(location).path))
    return None if "://" in location else Path(location)


def missing_artifact(record: Any, path: str, location: str | None) -> str:
    """Why run ``record`` (a :class:`~aepipe.tracking.base.RunRecord`) has no artifact ``path``,
    naming where it was looked for (``location``: the run's artifact location, if known)."""
    run, folder = f"run '{record.run_id}'", local_path(location)
    where = str(folder / path) if folder is not None else f"{location.rstrip('/')}/{path}" if location else path
    if folder is not None and not folder.is_dir():
        return (f"{run}: its artifacts are missing: no folder {folder} (deleted or moved since the run was logged; "
                "restore it there to use the run)")
    if str(record.params.get("tracking.log_model", "")).lower() == "false":
        return f"{run} logged no model (tracking.log_model = false); nothing at {where}"
    if record.status != "FINISHED":
        return f"{run} has no model at {where}: it did not finish (status {record.status})"
    return f"{run}: its model is missing: nothing at {where} (deleted or moved since the run logged it)"
