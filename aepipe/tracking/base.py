"""The tracker seam: what training and tuning need of a run store.

:class:`Tracker` opens runs, :class:`TrackedRun` writes one. :class:`~aepipe.tracking.mlflow_tracker.MlflowTracker`
is the only code that opens, writes and ends MLflow runs; :class:`~aepipe.tracking.memory.MemoryTracker`
keeps runs in memory, for tests of the loop without a store.

A run being trained holds a *lease*: the process that trains it (host, pid and the process's
start time) and a heartbeat refreshed while it trains. ``resume`` refuses a run whose lease is
live and takes over one whose process is gone (same host) or whose heartbeat is stale (another
host); by the same rule (:func:`live_holder`) the next command that opens the store ends such a
run (:mod:`aepipe.tracking.sweep`).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from aepipe.errors import ConfigError

#: tags of a run's lease
LEASE_OWNER, LEASE_BEAT = "aepipe.lease.owner", "aepipe.lease.heartbeat"
#: seconds between heartbeats, and the age after which a lease held on another host is stale
HEARTBEAT_SECONDS = float(os.environ.get("AEPIPE_HEARTBEAT_SECONDS", "30"))
STALE_SECONDS = float(os.environ.get("AEPIPE_STALE_SECONDS", "120"))
TERMINAL = ("FINISHED", "FAILED", "KILLED")


@dataclass
class RunRecord:
    """What a tracker knows of a stored run."""

    run_id: str
    status: str
    experiment_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class TrackedRun(Protocol):
    """One open run. Metric writes are batched off the training thread; ``flush`` waits for them."""

    run_id: str

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_figure(self, figure: Any, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_dataset(self, name: str, x: Any, y: Any) -> None: ...
    def log_model(self, model_dir: Path, pyfunc: Callable[[Path], None] | None, torch_model: Any = None) -> None: ...
    def logged_steps(self, key: str) -> list[int]: ...
    def heartbeat(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def finish(self, status: str, reason: str | None = None) -> None: ...


@runtime_checkable
class Tracker(Protocol):
    """A run store."""

    def start(self, experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None,
              lease: bool = True, system_metrics: float | bool | None = None) -> TrackedRun: ...
    def resume(self, run_id: str) -> TrackedRun: ...
    def open(self, run_id: str) -> TrackedRun: ...
    def reopen(self, run_id: str) -> None: ...
    def get_run(self, run_id: str) -> RunRecord: ...
    def find_runs(self, experiment_id: str, tags: dict[str, str]) -> list[RunRecord]: ...
    def running_runs(self) -> list[RunRecord]: ...
    def end_run(self, run_id: str, status: str, reason: str | None = None) -> bool: ...
    def delete_run(self, run_id: str) -> None: ...
    def download(self, run_id: str, path: str, dst: Path) -> Path | None: ...
    def checkpoint_dir(self, run_id: str) -> Path: ...
    def experiment_id(self, name: str) -> str: ...
    def experiment_name(self, experiment_id: str) -> str: ...
    def register_model(self, name: str, run_id: str, tags: dict[str, str] | None = None) -> None: ...
    def registered_runs(self, name: str) -> list[str]: ...


# --- leases -------------------------------------------------------------------------------


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` (Linux: from /proc; elsewhere empty), so that a pid
    reused by another process is not taken for the lease's owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def lease_owner() -> str:
    """This process, as ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(owner: str) -> bool | None:
    """Whether the lease's process lives: True or False on this host, None on another."""
    host, _, rest = owner.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if not process_alive(int(pid)):
        return False
    return not start or _process_start(int(pid)) in ("", start)


def live_holder(record: RunRecord) -> str | None:
    """Who still trains ``record``, as ``process PID on HOST (heartbeat Ns ago)``; None where
    nothing does: the run is not RUNNING, holds no lease, its process is gone (this host) or its
    heartbeat is older than ``STALE_SECONDS`` (another host). The one rule by which ``--resume``
    takes a run over and the sweep (:mod:`aepipe.tracking.sweep`) ends it."""
    owner = record.tags.get(LEASE_OWNER)
    if record.status != "RUNNING" or not owner:
        return None
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    alive = owner_alive(owner)
    try:
        age = max(0.0, time.time() - float(record.tags.get(LEASE_BEAT, "0")))
    except ValueError:
        age = float("inf")
    if alive or (alive is None and age < STALE_SECONDS):
        return f"process {pid} on {host} (heartbeat {age:.0f}s ago)"
    return None


def check_lease(record: RunRecord, what: str) -> None:
    """Refuse to take over a run that is still being trained: its lease's process lives (this
    host) or its heartbeat is recent (another host). A lease whose process is gone, or whose
    heartbeat is older than ``STALE_SECONDS``, is taken over."""
    if record.status == "RUNNING" and record.tags.get(LEASE_OWNER) == lease_owner():
        raise ConfigError(f"{what}: run {record.run_id} is being trained by this very process")
    holder = live_holder(record)
    if holder is not None:
        raise ConfigError(f"{what}: run {record.run_id} is still being trained by {holder}; "
                          "stop that process first, or wait for it to finish")
