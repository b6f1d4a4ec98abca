"""Tracking: where runs are stored (:mod:`~aepipe.tracking.store`; new stores from a template,
:mod:`~aepipe.tracking.template`; read-only and damaged ones, :mod:`~aepipe.tracking.health`;
lookups, :mod:`~aepipe.tracking.lookup`; errors in one line, :mod:`~aepipe.tracking.error_line`;
the code's commit, :mod:`~aepipe.tracking.git`), the tracker seam
(:mod:`~aepipe.tracking.base`), MLflow's tracker and an in-memory one. Light at import."""

from __future__ import annotations

from aepipe.tracking.git import git_commit  # noqa: F401 - the store's helpers, as aepipe.tracking.*
from aepipe.tracking.lookup import experiment_id, get_run  # noqa: F401
from aepipe.tracking.store import (  # noqa: F401
    artifact_root,
    check_run_id,
    checkpoint_dir,
    default_tracking_uri,
    inside,
    local_root,
    tracking_uri,
    uses_local_store,
)

__all__ = ["default_tracker", "check_run_id", "setup", "tracking_uri", "local_root", "get_run", "experiment_id"]


def setup():
    """Point MLflow at aepipe's store (created and migrated if new) and end the runs that dead
    processes left RUNNING; returns the mlflow module."""
    from aepipe.tracking.mlflow_tracker import open_store

    return open_store()


def default_tracker():
    """The MLflow tracker over aepipe's store (``MLFLOW_TRACKING_URI`` or ``./mlruns``)."""
    from aepipe.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker()
