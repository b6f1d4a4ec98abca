"""An in-memory tracker: runs as plain Python data, artifacts in a temporary folder.

For tests of the training loop (and plugins' own tests) without a store: nothing of MLflow is
imported. It honours the same contract as the MLflow tracker, leases included.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aepipe.errors import RunNotFoundError
from aepipe.tracking.base import LEASE_BEAT, LEASE_OWNER, RunRecord, check_lease, lease_owner
from aepipe.tracking.store import check_run_id, inside


@dataclass
class MemoryRunData:
    run_id: str
    experiment: str
    name: str | None
    status: str = "RUNNING"
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # key -> [(step, value)]
    datasets: list[str] = field(default_factory=list)

    def latest(self) -> dict[str, float]:
        return {k: v[-1][1] for k, v in self.metrics.items() if v}


class MemoryRun:
    def __init__(self, tracker: "MemoryTracker", data: MemoryRunData, lease: bool):
        self.tracker, self.data, self.run_id, self.lease = tracker, data, data.run_id, lease

    def log_params(self, params: dict[str, Any]) -> None:
        self.data.params.update({k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.data.metrics.setdefault(k, []).append((step, float(v)))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.data.tags.update({k: str(v) for k, v in tags.items()})

    def _path(self, artifact_file: str) -> Path:
        path = inside(self.tracker.root / self.run_id / "artifacts", *artifact_file.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_text(self, text: str, artifact_file: str) -> None:
        self._path(artifact_file).write_text(text, encoding="utf-8")

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        figure.savefig(self._path(artifact_file))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        shutil.copy(path, self._path(f"{artifact_path}/{path.name}" if artifact_path else path.name))

    def log_dataset(self, name: str, x: Any, y: Any) -> None:
        self.data.datasets.append(name)

    def log_model(self, model_dir: Path, pyfunc: Callable[[Path], None] | None, torch_model: Any = None) -> None:
        shutil.copytree(model_dir, self._path(model_dir.name), dirs_exist_ok=True)

    def logged_steps(self, key: str) -> list[int]:
        return [step for step, _ in self.data.metrics.get(key, [])]

    def heartbeat(self) -> None:
        if self.lease:
            self.data.tags[LEASE_BEAT] = f"{time.time():.0f}"

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def finish(self, status: str, reason: str | None = None) -> None:
        if reason:
            self.data.tags["aepipe.error"] = reason
        elif status == "FINISHED":
            self.data.tags.pop("aepipe.error", None)
        self.data.status = status


class MemoryTracker:
    """Runs kept in ``self.runs`` (by id); artifacts and checkpoints under ``root``."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="aepipe-memory-"))
        self.runs: dict[str, MemoryRunData] = {}
        self.experiments: dict[str, str] = {}
        self.registered: dict[str, list[str]] = {}

    def experiment_id(self, name: str) -> str:
        return self.experiments.setdefault(name, str(len(self.experiments) + 1))

    def experiment_name(self, experiment_id: str) -> str:
        return next(name for name, eid in self.experiments.items() if eid == experiment_id)

    def start(self, experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None,
              lease: bool = True, system_metrics: Any = None) -> MemoryRun:
        data = MemoryRunData(uuid.uuid4().hex, self.experiment_id(experiment), run_name, tags=dict(tags or {}))
        if lease:
            data.tags.update({LEASE_OWNER: lease_owner(), LEASE_BEAT: f"{time.time():.0f}"})
        self.runs[data.run_id] = data
        return MemoryRun(self, data, lease)

    def resume(self, run_id: str, what: str = "--resume") -> MemoryRun:
        check_lease(self.get_run(check_run_id(run_id, what)), what)
        data = self.runs[run_id]
        data.tags.update({LEASE_OWNER: lease_owner(), LEASE_BEAT: f"{time.time():.0f}"})
        data.tags.pop("aepipe.error", None)
        data.status = "RUNNING"
        return MemoryRun(self, data, True)

    def reopen(self, run_id: str) -> None:
        data = self.runs[check_run_id(run_id)]
        data.status = "RUNNING"
        data.tags.pop("aepipe.error", None)

    def open(self, run_id: str) -> MemoryRun:
        return MemoryRun(self, self.runs[check_run_id(run_id)], False)

    def get_run(self, run_id: str) -> RunRecord:
        data = self.runs.get(check_run_id(run_id, "run"))
        if data is None:
            raise RunNotFoundError(f"run '{run_id}' not found in the in-memory tracker")
        return RunRecord(run_id, data.status, data.experiment, dict(data.tags), dict(data.params), data.latest())

    def find_runs(self, experiment_id: str, tags: dict[str, str]) -> list[RunRecord]:
        return [self.get_run(r.run_id) for r in reversed(list(self.runs.values()))
                if r.experiment == experiment_id and all(r.tags.get(k) == v for k, v in tags.items())]

    def running_runs(self) -> list[RunRecord]:
        return [self.get_run(r.run_id) for r in list(self.runs.values()) if r.status == "RUNNING"]

    def end_run(self, run_id: str, status: str, reason: str | None = None) -> bool:
        data = self.runs[check_run_id(run_id)]
        if data.status != "RUNNING":
            return False
        MemoryRun(self, data, False).finish(status, reason)
        return True

    def delete_run(self, run_id: str) -> None:
        self.runs.pop(run_id, None)

    def download(self, run_id: str, path: str, dst: Path) -> Path | None:
        src = inside(self.root / check_run_id(run_id) / "artifacts", *path.split("/"))
        if not src.exists():
            return None
        target = dst / src.name
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            shutil.copy(src, target)
        return target

    def checkpoint_dir(self, run_id: str) -> Path:
        return inside(self.root / "checkpoints", check_run_id(run_id))

    def register_model(self, name: str, run_id: str, tags: dict[str, str] | None = None) -> None:
        versions = self.registered.setdefault(name, [])
        if run_id not in versions:
            versions.append(run_id)

    def registered_runs(self, name: str) -> list[str]:
        return list(self.registered.get(name, []))
