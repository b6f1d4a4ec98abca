"""The one module that touches Optuna beyond its public API, so that an Optuna upgrade breaks in
one place: a trial's storage id, writes to a trial by id (attributes, a FAIL), heartbeats driven
around ask/tell, failing stale trials and retrying them. ``tests/test_optuna_adapter.py`` pins
what each relies on. It also builds the storages, samplers and pruners a study uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from aepipe.errors import ConfigError
from aepipe.tune.record import end_trial_run
from aepipe.tune.study import WORKER_ATTR, Study, TuneSettings, mask_url, retrying


def quiet() -> None:
    """Optuna's log lines and the warnings aepipe's use of it raises on purpose, silenced."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # aepipe drives heartbeats itself around ask/tell (see Heartbeat)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    logging.getLogger("mlflow.tracking._model_registry").setLevel(logging.ERROR)


# --- a trial addressed by its storage id -------------------------------------------------------


def trial_id(trial: Any) -> int:
    """The storage's id of a trial (``optuna.Trial`` or ``FrozenTrial``): private in both."""
    return trial._trial_id


def set_attr(study: Any, tid: int, key: str, value: Any) -> bool:
    """Set a user attribute on trial ``tid`` (of any worker), through the study's storage; False
    where the trial has finished meanwhile (another worker recovered it first)."""
    import optuna

    try:
        study._storage.set_trial_user_attr(tid, key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def fail(study: Any, tid: int) -> bool:
    """Move trial ``tid`` from RUNNING to FAIL; False where another worker finished it first."""
    import optuna
    from optuna.trial import TrialState

    try:
        return bool(study._storage.set_trial_state_values(tid, state=TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def frozen(study: Any, tid: int) -> Any:
    return study._storage.get_trial(tid)


def retry(study: Any, tid: int) -> None:
    """Queue a failed trial again with the same parameters (Optuna's own retry callback)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    RetryHeartbeatStaleTrialCallback(max_retry=3)(study, frozen(study, tid))


def fail_stale(study: Any) -> None:
    """Fail trials whose heartbeat stopped (RDB storages; a no-op for the journal file)."""
    from optuna.storages import fail_stale_trials

    fail_stale_trials(study)


class Heartbeat:
    """Record a trial's heartbeat every interval while it trains (Optuna only does it inside
    ``Study.optimize``; aepipe drives ask/tell itself)."""

    def __init__(self, study: Any, tid: int):
        from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

        storage = study._storage
        self.enabled = isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)
        self.storage, self.trial_id = storage, tid
        self.stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            self.storage.record_heartbeat(self.trial_id)
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()
        return self

    def _beat(self):
        interval = self.storage.get_heartbeat_interval()
        while not self.stop.wait(interval):
            self.storage.record_heartbeat(self.trial_id)

    def __exit__(self, *exc):
        self.stop.set()


@contextlib.contextmanager
def claim_lock(study: Any, storage_url: str):
    """Serialize claiming a trial among the study's workers, so that two never take the last slot
    together: a file lock beside a journal file (one machine), a PostgreSQL advisory lock on the
    storage's engine (many machines); none for other storages."""
    if storage_url.startswith("journal://"):
        import fcntl

        with open(f"{storage_url[len('journal://'):]}.claim.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    engine = getattr(study._storage, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha1(f"aepipe claim {study.study_name}".encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            conn.commit()


# --- storages, samplers, pruners, studies ------------------------------------------------------


class FlockLock:
    """The journal file's lock (Optuna's ``lock_obj``: ``acquire``/``release``) as a kernel
    ``flock``, released the moment its holder dies. Optuna's default, a symlink, outlives a killed
    process: every other worker then waits out its 30 s grace period, blocked at its next report."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = None

    def acquire(self) -> bool:
        import fcntl

        handle = open(self.path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        self._file = handle
        return True

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            handle.close()  # closing the file drops its lock


class FailAndEnd:
    """Optuna's heartbeat callback for a trial whose worker stopped beating: end its run
    FAILED, then retry the trial with the same parameters."""

    def __init__(self, max_retry: int = 3):
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study, trial) -> None:
        end_trial_run(trial, f"worker {trial.user_attrs.get(WORKER_ATTR, '?')} stopped its heartbeat")
        self.retry(study, trial)


def make_storage(url: str):
    """An Optuna storage: ``journal:///path`` (a journal file, safe for several processes on one
    machine), or an RDB URL (``postgresql+psycopg://...`` for many machines) with heartbeats so
    that trials of dead workers are failed and retried."""
    import optuna
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("journal://"):
        path = Path(url[len("journal://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=FlockLock(f"{path}.lock.flock")))
    if url.startswith("postgresql://"):
        raise ConfigError(
            f"--storage {mask_url(url)}: use postgresql+psycopg://... (SQLAlchemy maps postgresql:// to psycopg2)"
        )
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        # workers started together on a new database all create Optuna's tables; the losers of
        # that race see a duplicate table or type, and find the tables when they try again
        return retrying(lambda: RDBStorage(
            url,
            heartbeat_interval=5,
            grace_period=20,
            heartbeat_stale_trial_callback=FailAndEnd(max_retry=3),
            engine_kwargs={"pool_pre_ping": True},
        ), (IntegrityError, ProgrammingError), attempts=4)
    except Exception as exc:  # noqa: BLE001 - connection and URL errors alike
        from aepipe.secrets import mask, secrets_of

        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--storage {mask_url(url)}: cannot open: {mask(message, secrets_of(url))}") from None


def _sampler(settings: TuneSettings, shared: bool = False):
    """Optuna's sampler. Workers sharing a study each draw from their own stream (the seed mixed
    with the process id), or they would all propose the same settings."""
    import optuna

    seed = settings.seed
    if shared:
        seed = ((seed or 0) * 1_000_003 + os.getpid()) % 2**32
    return {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "nsgaii": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }[settings.sampler]()


def _pruner(settings: TuneSettings, epochs: int):
    import optuna

    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=settings.warmup_epochs)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def open_study(st: Study, epochs: int, shared: bool | None = None) -> Any:
    import optuna

    quiet()
    storage = make_storage(st.storage_url)
    directions = st.settings.objective_directions
    try:
        st.study = optuna.create_study(
            study_name=st.name, storage=storage, load_if_exists=True,
            sampler=_sampler(st.settings, shared if shared is not None else not st.storage_url.startswith("journal:")),
            pruner=_pruner(st.settings, epochs),
            directions=directions,
        )
    except ValueError as exc:  # e.g. an existing study with other directions
        raise ConfigError(f"study '{st.name}' in {mask_url(st.storage_url)}: {exc}") from None
    existing = [d.name.lower() for d in st.study.directions]
    if existing != directions:
        raise ConfigError(
            f"study '{st.name}' in {mask_url(st.storage_url)} optimises in the directions {existing}; this "
            f"pipeline asks for {directions}: a changed objective never joins a study; run it as a new study "
            "with --study NEW_NAME (or [tune] study)"
        )
    return st.study


def has_study(study: Any, name: str) -> bool:
    """Whether the storage of ``study`` holds a study named ``name``."""
    import optuna

    return name in optuna.get_all_study_names(storage=study._storage)
