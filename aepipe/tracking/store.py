"""Where the MLflow store lives, checked run ids and paths inside it, and the store opened (created
and migrated once, under a lock, where it is new).

Default: a SQLite store ``./mlruns/mlflow.db`` and artifacts under ``./mlruns/artifacts``
(MLflow 3.13+ refuses its old file store). ``MLFLOW_TRACKING_URI`` takes over, for example an
``mlflow server`` shared by many workers. ``AEPIPE_HOME`` moves the local folder.

Commands that only read (``compare``, ``encode``, ...) work on a read-only store: nothing is
created or locked there. Commands that write call :func:`~aepipe.tracking.health.check_writable`
before any work: a read-only store, or a SQLite file that ``PRAGMA quick_check`` finds damaged, is
refused in one line before a run is written into it.

What this process learns of stores (the URI it exported, the stores it created, found read-only or
checked) is held in one object, :data:`memory`; :func:`forget` clears it, as a new process starts
(tests that point aepipe at another store call it).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from aepipe.errors import ConfigError, StoreError
from aepipe.tracking import template

log = logging.getLogger("aepipe.tracking")

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


@dataclass
class StoreMemory:
    """What this process has learnt of tracking stores, so that a command opens, creates and
    checks each store once."""

    #: the URI aepipe gave MLflow, which exports it to ``MLFLOW_TRACKING_URI``: not the user's choice
    set_by_us: str | None = None
    #: local stores this process has seen created and migrated
    created: set[str] = field(default_factory=set)
    #: local stores this process found it cannot write (their folder)
    read_only: set[str] = field(default_factory=set)
    #: SQLite files this process checked (``PRAGMA quick_check``), and what was found
    checked: dict[Path, str | None] = field(default_factory=dict)


#: the one :class:`StoreMemory` of this process
memory = StoreMemory()


def forget() -> None:
    """Forget what this process learnt of tracking stores, as a new process starts: the next
    command takes ``MLFLOW_TRACKING_URI`` and ``AEPIPE_HOME`` as it finds them, and opens and
    checks its store afresh. (For tests that point aepipe at another store.)"""
    fresh = StoreMemory()
    for name in fresh.__dataclass_fields__:
        setattr(memory, name, getattr(fresh, name))


def tracking_uri() -> str:
    """The user's ``MLFLOW_TRACKING_URI`` if they set one, else aepipe's local store."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env != memory.set_by_us:
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


def connect():
    """Point MLflow at the store; returns the mlflow module. Creates and migrates a new local
    store; an existing read-only one is only read. (:func:`aepipe.tracking.setup` also ends the
    runs that dead processes left RUNNING.)"""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # configures its own loggers on import: quieten them afterwards

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # aepipe pickles models on purpose (see training._log_model) and pins torch without "+cpu"
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("mlflow.utils.requirements_utils").setLevel(logging.ERROR)

    uri = tracking_uri()
    if uses_local_store():
        root = local_root()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the tracking store {root}: {exc.strerror or exc} "
                             "(set AEPIPE_HOME to a writable folder)") from None
        memory.set_by_us = uri  # remembered so that MLflow's export of it is not taken for the user's choice
    mlflow.set_tracking_uri(uri)
    if uses_local_store() and uri not in memory.created:
        _create_once(mlflow, uri)
        memory.created.add(uri)
    return mlflow


def _create_once(mlflow, uri: str) -> None:
    """Create and migrate the local SQLite store under a file lock: processes started together
    on a new store (a shell loop with ``&``, a job array, tune workers) would otherwise race
    through MLflow's schema migrations and crash. The first creates it; the others wait, then
    find it current. A store whose folder cannot be written (a read-only mount, an archived
    result) is opened without the lock: nothing can be created there, and readers need none."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        fcntl = None
    root = local_root()
    try:
        lock = open(root / ".store.lock", "a")
    except OSError as exc:  # EROFS, EACCES, ...: the folder cannot be written
        if not (root / "mlflow.db").exists():
            raise StoreError(f"no tracking store in {root}, and none can be created there: "
                             f"{exc.strerror or exc} (set AEPIPE_HOME to a writable folder)") from None
        memory.read_only.add(uri)
        _verify(mlflow, uri)
        return
    with lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            db = root / "mlflow.db"
            new = not db.exists()
            copied = new and template.from_template(mlflow, db, artifact_root())
            try:
                _verify(mlflow, uri)
            except Exception:
                if not copied:
                    raise
                db.unlink()  # a template MLflow does not take: created and migrated the usual way
                copied = False
                _verify(mlflow, uri)
            if new and not copied:
                template.save_template(mlflow, db)
                template.bind_local_default(db, artifact_root())
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _verify(mlflow, uri: str) -> None:
    client = mlflow.MlflowClient(uri)
    client.search_experiments(max_results=1)  # the tracking store: created, migrated
    client.search_registered_models(max_results=1)  # the model registry's tables


