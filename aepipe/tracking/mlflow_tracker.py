"""The MLflow tracker: the only code that opens, writes and ends MLflow runs. It opens, finds and
ends them; one run being written is an :class:`~aepipe.tracking.mlflow_run.MlflowRun`. Runs are
addressed by id through ``MlflowClient``.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from aepipe.errors import RunNotFoundError
from aepipe.secrets import mask
from aepipe.tracking import store
from aepipe.tracking.error_line import error_line
from aepipe.tracking.health import writable_and_sound
from aepipe.tracking.lookup import experiment_id
from aepipe.tracking.mlflow_run import MlflowRun
from aepipe.tracking.base import LEASE_BEAT, LEASE_OWNER, RunRecord, check_lease, lease_owner

log = logging.getLogger("aepipe.tracking")

_SAFE = re.compile(r"[A-Za-z0-9_.:\- ]*")  # values that may sit inside an MLflow filter's quotes


def open_store():
    """:func:`~aepipe.tracking.store.connect`, then, once per process, the end of the runs that dead
    processes left RUNNING (:mod:`~aepipe.tracking.sweep`); nothing is written into a read-only or
    damaged store. Returns the mlflow module."""
    from aepipe.tracking import sweep

    mlflow = store.connect()
    uri = store.tracking_uri()
    if uri not in sweep._swept and writable_and_sound(uri):
        sweep.once(uri, MlflowTracker)
    return mlflow


class MlflowTracker:
    """Runs in the MLflow store that :func:`aepipe.tracking.setup` points at."""

    def __init__(self) -> None:
        mlflow = open_store()
        self.client = mlflow.MlflowClient()

    @staticmethod
    def mlflow():
        """The mlflow module over the store, opened by :func:`open_store` (for MLflow's fluent APIs)."""
        return open_store()

    # --- opening runs ---------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        return experiment_id(name)

    def experiment_name(self, experiment_id: str) -> str:
        return self.client.get_experiment(experiment_id).name

    def start(self, experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None,
              lease: bool = True, system_metrics: Any = None) -> MlflowRun:
        """A new run in ``experiment`` (created if missing), leased to this process."""
        tags = dict(tags or {})
        if lease:
            tags.update({LEASE_OWNER: lease_owner(), LEASE_BEAT: f"{time.time():.0f}"})
        tags = {k: mask(str(v)) for k, v in tags.items()}
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=tags)
        return MlflowRun(self, run.info.run_id, lease=lease, system_metrics=system_metrics)

    def resume(self, run_id: str, what: str = "--resume") -> MlflowRun:
        """Take run ``run_id`` over to continue it: refused while another live process trains it."""
        record = self.get_run(store.check_run_id(run_id, what))
        check_lease(record, what)
        me = lease_owner()
        self.client.set_tag(run_id, LEASE_OWNER, me)
        self.client.set_tag(run_id, LEASE_BEAT, f"{time.time():.0f}")
        time.sleep(0.05)
        owner = self.client.get_run(run_id).data.tags.get(LEASE_OWNER)
        if owner != me:  # another process took it over at the same moment
            check_lease(self.get_run(run_id), what)
        self.client.update_run(run_id, status="RUNNING")
        self._delete_tag(run_id, "aepipe.error")
        return MlflowRun(self, run_id, lease=True)

    def reopen(self, run_id: str) -> None:
        """Mark a stopped run RUNNING again (a study's parent run when its command runs again)."""
        self.client.update_run(store.check_run_id(run_id), status="RUNNING")
        self._delete_tag(run_id, "aepipe.error")

    def open(self, run_id: str) -> MlflowRun:
        """Write to an existing run without leasing it (a study's parent run)."""
        return MlflowRun(self, store.check_run_id(run_id), lease=False)

    # --- reading and ending runs ----------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        store.check_run_id(run_id, "run")
        try:
            run = self.client.get_run(run_id)
        except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing run
            raise RunNotFoundError(
                f"run '{run_id}' not found in {mask(store.tracking_uri())}: {error_line(exc)}"
            ) from None
        return RunRecord(run_id, run.info.status, run.info.experiment_id, dict(run.data.tags), dict(run.data.params),
                         dict(run.data.metrics))

    def find_runs(self, experiment_id: str, tags: dict[str, str]) -> list[RunRecord]:
        """Runs of ``experiment_id`` carrying every tag in ``tags``, newest first. Values are
        data, never pasted into a filter unless they are plain words."""
        safe = {k: v for k, v in tags.items() if _SAFE.fullmatch(k) and _SAFE.fullmatch(v)}
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in safe.items())
        found: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1000, page_token=token
            )
            for run in page:
                if all(run.data.tags.get(k) == v for k, v in tags.items()):
                    found.append(
                        RunRecord(run.info.run_id, run.info.status, run.info.experiment_id, dict(run.data.tags))
                    )
            token = page.token
            if not token:
                return found

    def running_runs(self) -> list[RunRecord]:
        """Every RUNNING run of the store's active experiments: one search of the experiments,
        one of their runs (paged by a thousand)."""
        from mlflow.entities import ViewType

        ids, token = [], None
        while True:
            page = self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
            ids += [e.experiment_id for e in page]
            token = page.token
            if not token:
                break
        found: list[RunRecord] = []
        for i in range(0, len(ids), 100):  # a search names at most 100 experiments
            token = None
            while True:
                page = self.client.search_runs(
                    ids[i : i + 100], "attributes.status = 'RUNNING'", max_results=1000, page_token=token
                )
                found += [
                    RunRecord(r.info.run_id, r.info.status, r.info.experiment_id, dict(r.data.tags)) for r in page
                ]
                token = page.token
                if not token:
                    break
        return found

    def end_run(self, run_id: str, status: str, reason: str | None = None) -> bool:
        """End run ``run_id`` with ``status`` if it is still RUNNING (its process died)."""
        if self.get_run(run_id).status != "RUNNING":
            return False
        if reason:
            self.client.set_tag(run_id, "aepipe.error", mask(reason)[:5000])
        self.client.set_terminated(run_id, status)
        return True

    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def _delete_tag(self, run_id: str, key: str) -> None:
        try:
            self.client.delete_tag(run_id, key)
        except Exception:  # noqa: BLE001 - no such tag
            pass

    def download(self, run_id: str, path: str, dst: Path) -> Path | None:
        """Download artifact ``path`` of the run into ``dst``; None where the run has none."""
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            return None

    def checkpoint_dir(self, run_id: str) -> Path:
        return store.checkpoint_dir(run_id)

    def artifact_dir(self, run_id: str) -> Path | None:
        """The folder of the run's artifacts where it is on this machine's file system."""
        from urllib.parse import unquote, urlparse

        try:
            uri = urlparse(self.client.get_run(run_id).info.artifact_uri)
        except Exception:  # noqa: BLE001 - only used to name a file in an error
            return None
        return Path(unquote(uri.path)) if uri.scheme in ("", "file") else None

    def artifact_location(self, run_id: str) -> str:
        """Where run ``run_id``'s artifacts are stored (a URI)."""
        return self.client.get_run(store.check_run_id(run_id)).info.artifact_uri

    # --- the model registry ---------------------------------------------------------------

    def register_model(self, name: str, run_id: str, tags: dict[str, str] | None = None) -> None:
        """Register ``run_id``'s pyfunc model under ``name`` (the version tagged with ``tags``)
        unless that run already is a version of it; a version registered twice at once (two
        machines) is kept once."""
        import mlflow

        if any(v.run_id == run_id for v in self.model_versions(name)):
            return
        run = self.client.get_run(run_id)
        if not run.outputs.model_outputs:
            return  # the run logged no model (tracking.log_model = false)
        # the pyfunc model: what `mlflow models serve -m models:/NAME/VERSION` and any MLflow client use
        mlflow.register_model(f"runs:/{run_id}/pyfunc", name, tags=tags)
        self.drop_duplicate_versions(name, run_id)

    def registered_runs(self, name: str) -> list[str]:
        """The runs of the versions registered under ``name``."""
        return [v.run_id for v in self.model_versions(name)]

    def model_versions(self, name: str) -> list[Any]:
        """Every version registered under ``name`` (the name is data: no filter is built from it)."""
        from mlflow.exceptions import MlflowException

        try:
            return [v for v in self.client.search_model_versions(max_results=10000) if v.name == name]
        except MlflowException:
            return []

    def drop_duplicate_versions(self, name: str, run_id: str) -> None:
        """Keep one version (the first) of ``run_id``'s model under ``name``: two commands that
        registered it at the same moment would otherwise leave two."""
        from mlflow.exceptions import MlflowException

        same = sorted(int(v.version) for v in self.model_versions(name) if v.run_id == run_id)
        for version in same[1:]:
            try:
                self.client.delete_model_version(name, str(version))
            except MlflowException:  # the other command deleted it first
                pass
