"""One MLflow run being written: :class:`MlflowRun`.

Metrics are written by a background thread, one ``log_batch`` for everything queued in the last
``AEPIPE_TRACKING_FLUSH_SECONDS`` (2 s), so the training loop never waits on the store and the
store is written a few times a minute rather than once per epoch; the same thread refreshes the
run's lease heartbeat. Everything else is written at once. Only logging a model uses MLflow's
active run (its model APIs need one).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from aepipe.errors import RunNotFoundError
from aepipe.secrets import mask
from aepipe.tracking import store
from aepipe.tracking.base import HEARTBEAT_SECONDS, LEASE_BEAT
from aepipe.tracking.error_line import error_line

_STOP = object()
#: metrics are written at most this often (seconds): one database write for several epochs
FLUSH_SECONDS = float(os.environ.get("AEPIPE_TRACKING_FLUSH_SECONDS", "2"))


def _metric_batches(items: list[list[tuple]], limit: int = 1000) -> list[list[tuple]]:
    """Queued metrics (one list per ``log_metrics`` call: an epoch) in batches of at most
    ``limit`` (MLflow's most per call) that never split an epoch unless it alone is larger: each
    batch is one transaction, so a process killed between two leaves every epoch stored whole or
    not at all, and ``--resume`` (which logs the epochs after the last one stored) logs each once."""
    batches: list[list[tuple]] = []
    current: list[tuple] = []
    for item in items:
        if current and len(current) + len(item) > limit:
            batches.append(current)
            current = []
        for i in range(0, len(item), limit):
            current += item[i : i + limit]
            if len(current) >= limit:
                batches.append(current)
                current = []
    if current:
        batches.append(current)
    return batches


class MlflowRun:
    """One MLflow run, written through the tracker's client."""

    def __init__(self, tracker: Any, run_id: str, lease: bool = False, system_metrics: Any = None):
        # tracker: the MlflowTracker that opened the run (not imported here: it imports this module)
        self.tracker, self.client, self.run_id = tracker, tracker.client, run_id
        self.lease = lease
        self._queue: queue.Queue = queue.Queue()
        self._hurry = threading.Event()  # set by flush(): write now, do not wait for the interval
        self._error: BaseException | None = None
        self._fluent = False
        self._ended: tuple[str, int | None] | None = None  # an ended run written to again: its status and end time
        self._monitor = None
        self._writer: threading.Thread | None = None
        if lease:  # the writer thread also keeps the lease's heartbeat
            self._start_writer()
        if system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(run_id, tracking_uri=store.tracking_uri())
            if not isinstance(system_metrics, bool):  # the pipeline's interval over MLflow's variable
                self._monitor.sampling_interval = float(system_metrics)
            self._monitor.start()

    # --- the writer thread ----------------------------------------------------------------

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name=f"aepipe-tracker-{self.run_id[:8]}", daemon=True)
            self._writer.start()

    def _write(self) -> None:
        from mlflow.entities import Metric

        last_beat = last_write = time.time()
        while True:
            wait = max(0.05, HEARTBEAT_SECONDS - (time.time() - last_beat)) if self.lease else None
            try:
                items = [self._queue.get(timeout=wait)]
            except queue.Empty:
                items = []
            if items and items[0] is not _STOP:  # gather what comes within the flush interval
                self._hurry.wait(max(0.0, FLUSH_SECONDS - (time.time() - last_write)))
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in items)
            try:
                for batch in _metric_batches([item for item in items if item is not _STOP]):
                    self.client.log_batch(self.run_id, metrics=[Metric(*m) for m in batch], synchronous=True)
                last_write = time.time()
                if self.lease and not stop and time.time() - last_beat >= HEARTBEAT_SECONDS:
                    self.client.set_tag(self.run_id, LEASE_BEAT, f"{time.time():.0f}")
                    last_beat = time.time()
            except Exception as exc:  # noqa: BLE001 - surfaced by flush()
                self._error = exc
            finally:
                for _ in items:
                    self._queue.task_done()
            if stop:
                return

    def flush(self) -> None:
        """Wait until every queued metric is written; raise what the writer met."""
        self._hurry.set()
        self._queue.join()
        self._hurry.clear()
        if self._error is not None:
            error, self._error = self._error, None
            raise RunNotFoundError(
                f"run {self.run_id}: the tracking store refused a write: {error_line(error)}"
            ) from error

    # --- writes ---------------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._start_writer()
        now = int(time.time() * 1000)
        self._queue.put([(k, float(v), now, step) for k, v in metrics.items()])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, mask(str(v), remembered=False)[:6000]) for k, v in params.items()]  # URLs' secrets
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(
            self.run_id, tags=[RunTag(k, mask(str(v))[:5000]) for k, v in tags.items()], synchronous=True
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, mask(text, remembered=False), artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        try:
            self.client.log_figure(self.run_id, figure, artifact_file)
        finally:
            if "matplotlib.pyplot" in sys.modules:  # a pyplot figure: release it
                sys.modules["matplotlib.pyplot"].close(figure)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy file ``path`` into the run's artifacts (MLflow writes it through a temporary file
        it removes on failure); a full disk is one WriteError naming the artifact."""
        try:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as exc:  # noqa: BLE001 - an OSError, possibly wrapped by MLflow
            from aepipe.files import write_error

            where = self.tracker.artifact_dir(self.run_id) or Path(f"artifacts of run {self.run_id}")
            error = write_error(where.joinpath(*(artifact_path or "").split("/"), path.name), exc)
            if error is None:
                raise
            raise error from None

    def log_dataset(self, name: str, x: Any, y: Any) -> None:
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        ds = mlflow.data.from_numpy(x, targets=y, name=name)
        entry = DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])
        self.client.log_inputs(self.run_id, datasets=[entry])

    def log_model(self, model_dir: Path, pyfunc: Callable[[Path], None] | None, torch_model: Any = None) -> None:
        """Log aepipe's model folder as the run's ``aepipe-model`` artifacts, the pyfunc model
        built on it (``pyfunc(model_dir)`` logs it into the active run) and, where asked, MLflow's
        PyTorch flavour of ``torch_model``."""
        mlflow = self.tracker.mlflow()
        self.client.log_artifacts(self.run_id, str(model_dir), model_dir.name)
        if pyfunc is None and torch_model is None:
            return
        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            info = self.client.get_run(self.run_id).info
            if info.status != "RUNNING":  # MLflow's fluent API marks it RUNNING: close() puts it back
                self._ended = (info.status, info.end_time)
            mlflow.start_run(run_id=self.run_id, nested=active is not None)
            self._fluent = True
        if pyfunc is not None:
            pyfunc(model_dir)
        if torch_model is not None:
            import mlflow.pytorch
            from mlflow.models import infer_signature

            t = torch_model
            mlflow.pytorch.log_model(
                t["model"],
                name="model",
                pip_requirements=t["requirements"],
                serialization_format="pickle",
                signature=infer_signature(t["example"], t["output"]),
                input_example=None if t["conditional"] else t["example"],
            )

    def logged_steps(self, key: str) -> list[int]:
        return [m.step for m in self.client.get_metric_history(self.run_id, key)]

    def heartbeat(self) -> None:
        if self.lease:
            self.client.set_tag(self.run_id, LEASE_BEAT, f"{time.time():.0f}")

    def close(self) -> None:
        """Make every queued write and stop the writer, leaving the run as it is (an ended run
        that a model was logged to keeps its status and end time)."""
        if self._writer is not None:
            self._queue.put(_STOP)
            self._hurry.set()
            self._writer.join(timeout=60)
            self._writer = None
        if self._fluent:
            self.tracker.mlflow().end_run()
            self._fluent = False
            if self._ended is not None:
                status, end_time = self._ended
                self.client.set_terminated(self.run_id, status, end_time=end_time)
                self._ended = None
        self.flush()

    def finish(self, status: str, reason: str | None = None) -> None:
        """End the run with ``status`` (FINISHED, FAILED, KILLED) and its reason; every queued
        write is made first, and the run is ended even if one of them fails."""
        failure: BaseException | None = None
        if self._writer is not None:
            self._queue.put(_STOP)
            try:
                self.flush()
            except RunNotFoundError as exc:
                failure = exc
            self._writer.join(timeout=60)
            self._writer = None
        if self._monitor is not None:
            self._monitor.finish()
        try:
            if reason:
                self.client.set_tag(self.run_id, "aepipe.error", mask(reason)[:5000])
            elif status == "FINISHED":
                self.tracker._delete_tag(self.run_id, "aepipe.error")  # left by an interrupted attempt
        finally:
            if self._fluent:
                self.tracker.mlflow().end_run(status=status)
                self._fluent = False
            else:
                self.client.set_terminated(self.run_id, status)
        if failure is not None:
            raise failure
