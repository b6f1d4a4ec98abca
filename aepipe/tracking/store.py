"""Where the MLflow store lives, and checked run ids and paths inside it.

Default: a SQLite store ``./mlruns/mlflow.db`` and artifacts under ``./mlruns/artifacts``
(MLflow 3.13+ refuses its old file store). ``MLFLOW_TRACKING_URI`` takes over, for example an
``mlflow server`` shared by many workers. ``AEPIPE_HOME`` moves the local folder.

Commands that only read (``compare``, ``encode``, ...) work on a read-only store: nothing is
created or locked there. Commands that write call :func:`check_writable` before any work: a
read-only store, or a SQLite file that ``PRAGMA quick_check`` finds damaged, is refused in one
line before a run is written into it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from aepipe.errors import ConfigError, RunNotFoundError, StoreError
from aepipe.secrets import mask

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

    global _set_by_us
    uri = tracking_uri()
    if uses_local_store():
        root = local_root()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the tracking store {root}: {exc.strerror or exc} "
                             "(set AEPIPE_HOME to a writable folder)") from None
        _set_by_us = uri  # remembered so that MLflow's export of it is not taken for the user's choice
    mlflow.set_tracking_uri(uri)
    if uses_local_store() and uri not in _created:
        _create_once(mlflow, uri)
        _created.add(uri)
    return mlflow


_created: set[str] = set()  # local stores this process has seen created and migrated
_read_only: set[str] = set()  # local stores this process found it cannot write (their folder)

#: errno values that mean "this file or folder cannot be written" (not "it is missing")
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


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
        _read_only.add(uri)
        _verify(mlflow, uri)
        return
    with lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            db = root / "mlflow.db"
            new = not db.exists()
            copied = new and _from_template(mlflow, db)
            try:
                _verify(mlflow, uri)
            except Exception:
                if not copied:
                    raise
                db.unlink()  # a template MLflow does not take: created and migrated the usual way
                copied = False
                _verify(mlflow, uri)
            if new and not copied:
                _save_template(mlflow, db)
                _bind_local_default(db)
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


# --- new stores from a template -----------------------------------------------------------------
# MLflow creates a new SQLite store by running every schema migration since its first (seconds,
# most of a short run's fixed cost). The first store this machine creates with an MLflow version
# is kept, empty, as that version's template; later new stores start as a copy of it. The cache
# is a folder anyone who can write there may change: a template is used only if it is a regular
# file of its own (no symbolic or hard link), aepipe's marker is in it, and the copy holds no run,
# no registered model and no experiment but ``Default``; anything else is ignored, with a warning,
# and replaced by the next store MLflow creates.

#: the table aepipe adds to a template (dropped from every copy); its one row lists the tables
#: MLflow itself filled when it created the store
MARKER = "aepipe_store_template"
#: what a template may hold however it was made: runs, registered models and their versions never
NEVER_FILLED = ("runs", "registered_models", "model_versions")
#: an empty store is well under 1 MiB; a larger file is not read
TEMPLATE_BYTES = 16 << 20


def _template(mlflow) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aepipe"
    return cache / f"mlflow-{mlflow.__version__}-empty.db"


def _bind_default(con) -> None:
    """Point the store's ``Default`` experiment into the store's own artifacts folder, as
    aepipe's own experiments are (MLflow points it at ``./mlruns/0`` of the process that created
    the store, wherever that is)."""
    con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (artifact_root(),))


def _copy_regular_file(src: Path, dst: Path) -> None:
    """Copy the bytes of ``src`` to a new file ``dst``, refusing (OSError with the reason) a
    symbolic link, anything but a regular file, a file with another name (a hard link) or one
    larger than :data:`TEMPLATE_BYTES`. Checked on the open file: nothing is followed."""
    import stat

    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_nlink != 1:
            raise OSError(errno.EMLINK, f"a file with {info.st_nlink} names (hard links)")
        if info.st_size > TEMPLATE_BYTES:
            raise OSError(errno.EFBIG, f"{info.st_size} bytes, far more than an empty store")
        with open(fd, "rb", closefd=False) as source, open(dst, "xb") as target:
            data = source.read(TEMPLATE_BYTES + 1)
            if len(data) > TEMPLATE_BYTES:
                raise OSError(errno.EFBIG, "grew past the size of an empty store while read")
            target.write(data)
    finally:
        os.close(fd)


def _template_problem(con) -> str | None:
    """Why the store open on ``con`` (a template's copy) is not an empty store aepipe kept, or
    None: aepipe's marker, no run, no registered model, no experiment but ``Default``, and no
    row in any table but those MLflow filled when it created the store (the marker lists them)."""
    tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if MARKER not in tables:
        return "aepipe did not make it (no marker)"
    marked = con.execute(f"SELECT filled FROM {MARKER}").fetchall()
    if len(marked) != 1 or not isinstance(marked[0][0], str):
        return "its marker is not aepipe's"
    filled = set(marked[0][0].split(",")) - set(NEVER_FILLED)
    if "experiments" not in tables or "runs" not in tables:
        return "it is not an MLflow store"
    for table in (*NEVER_FILLED, *sorted(tables - filled - {MARKER, "experiments"})):
        if table in tables and (n := con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]):
            return f"it holds {n} row{'s' if n != 1 else ''} of {table}"
    experiments = con.execute("SELECT experiment_id, name FROM experiments").fetchall()
    if [(str(i), name) for i, name in experiments] != [("0", "Default")]:
        names = ", ".join(repr(name) for _, name in experiments[:5])
        return f"it holds {len(experiments)} experiments ({names}), not only Default"
    return None


def _from_template(mlflow, db: Path) -> bool:
    """Start ``db`` as a copy of this MLflow version's empty store, if there is one that passes
    :func:`_template_problem`; its ``Default`` experiment then points into the new store."""
    import sqlite3

    template = _template(mlflow)
    if not os.path.lexists(template):
        return False
    part = db.with_name(f".{db.name}.{os.getpid()}.part")
    try:
        part.unlink(missing_ok=True)  # left by a killed process of the same id
        try:
            _copy_regular_file(template, part)
        except FileNotFoundError:
            return False  # removed meanwhile
        except OSError as exc:
            problem = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        else:
            with contextlib.closing(sqlite3.connect(part)) as con, con:
                problem = _template_problem(con)
                if problem is None:
                    con.execute(f"DROP TABLE {MARKER}")
                    _bind_default(con)
        if problem is not None:
            log.warning("the tracking store template %s was ignored: %s; the new store is created by MLflow "
                        "and kept as the template instead", template, problem)
            part.unlink(missing_ok=True)
            return False
        os.replace(part, db)
    except (OSError, sqlite3.Error) as exc:
        log.debug("the store template %s was not used: %s", template, exc)
        part.unlink(missing_ok=True)
        return False
    return True


def _save_template(mlflow, db: Path) -> None:
    """Keep the store MLflow just created, still empty and marked as aepipe's, as this version's
    template, in place of whatever is there (a template that was not used: see
    :func:`_from_template`; a link is replaced, never written through)."""
    import sqlite3

    template = _template(mlflow)
    part = template.with_name(f".{template.name}.{os.getpid()}.part")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(part)) as dst:
            if src.execute("SELECT count(*) FROM runs").fetchone()[0]:
                return
            src.backup(dst)  # a consistent copy, even while MLflow's engine holds the file open
            with dst:
                tables = [name for (name,) in dst.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                filled = [t for t in tables if dst.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]]
                dst.execute(f"CREATE TABLE {MARKER} (filled TEXT NOT NULL)")
                dst.execute(f"INSERT INTO {MARKER} VALUES (?)", (",".join(filled),))
                if problem := _template_problem(dst):  # what MLflow made must pass the check copies pass
                    log.debug("no store template kept at %s: %s", template, problem)
                    return
        os.replace(part, template)
    except (OSError, sqlite3.Error) as exc:
        log.debug("no store template kept at %s: %s", template, exc)
    finally:
        part.unlink(missing_ok=True)


def _bind_local_default(db: Path) -> None:
    """Point the ``Default`` experiment of a store MLflow just created into the store."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
            _bind_default(con)
    except sqlite3.Error as exc:
        log.debug("the Default experiment of %s keeps MLflow's artifact location: %s", db, exc)


def _verify(mlflow, uri: str) -> None:
    client = mlflow.MlflowClient(uri)
    client.search_experiments(max_results=1)  # the tracking store: created, migrated
    client.search_registered_models(max_results=1)  # the model registry's tables


# --- stores that cannot be written -----------------------------------------------------------

#: seconds ``PRAGMA quick_check`` may take before it is given up (the store is then trusted)
CHECK_SECONDS = float(os.environ.get("AEPIPE_STORE_CHECK_SECONDS", "10"))
_checked: dict[Path, str | None] = {}  # SQLite files this process checked, and what was found: once per command


def sqlite_path(uri: str | None = None) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (aepipe's local store or the user's); None for
    a server or another database."""
    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):]
    if path.startswith("file:"):  # SQLite's own URI form (sqlite:///file:PATH?mode=ro&uri=true)
        from urllib.parse import unquote, urlparse

        path = unquote(urlparse(path).path)
    path = path.split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


def _cannot_write(path: Path) -> str | None:
    """Why ``path`` (an existing file or folder) cannot be written ("is read-only (...)"), or
    None. Probed by opening it for writing (a file) or creating a temporary file in it (a
    folder): the answer holds for a read-only mount, missing permissions and root alike."""
    import tempfile

    try:
        if path.is_dir():
            with tempfile.TemporaryFile(dir=path, prefix=".aepipe-probe-"):
                pass
        else:
            with open(path, "r+b"):
                pass
    except OSError as exc:
        return f"{'is read-only' if exc.errno in _READ_ONLY else 'cannot be written'} ({exc.strerror or exc}: {path})"
    return None


def check_writable(what: str = "this command", open_store: bool = True) -> None:
    """Refuse, in one line and before any work, to write into a store that is read-only or
    damaged: ``what`` (the command) writes runs into it. Checks a SQLite store's file and
    folder (and the local store's artifacts and checkpoints) and runs ``PRAGMA quick_check``
    on it once per process, bounded by ``AEPIPE_STORE_CHECK_SECONDS``. A tracking server is
    left to answer for itself. ``open_store=False``: only what exists is checked, without
    importing MLflow or creating the store (a command that starts workers first)."""
    db = sqlite_path()
    if db is None:
        return
    if open_store:
        setup()  # creates a new store where it can; reads an existing one
    local = uses_local_store()
    paths = [db.parent, db] + ([local_root() / "artifacts", local_root() / "checkpoints"] if local else [])
    for path in paths:
        if path.exists() and (reason := _cannot_write(path)):
            where = "AEPIPE_HOME" if local else "MLFLOW_TRACKING_URI"
            raise StoreError(f"{what} writes runs into the tracking store {local_root() if local else db}, which {reason}: "
                             f"work on a writable copy (set {where} to it), or make it writable")
    if db.exists() and (problem := damage(db)):
        raise StoreError(f"{what}: the tracking store {db} is damaged (PRAGMA quick_check: {problem}); nothing was "
                         f"written. {recovery_hint(db)}")


def writable_and_sound(uri: str | None = None) -> bool:
    """False for a local store this process found read-only, or a SQLite store that
    :func:`damage` finds damaged: what writes on its own (the sweep of dead runs) leaves them be."""
    uri = uri or tracking_uri()
    db = sqlite_path(uri)
    return uri not in _read_only and (db is None or damage(db) is None)


class StoreWarning(UserWarning):
    """The tracking store a reading command reads is damaged (shown as one line)."""


def warn_if_damaged() -> None:
    """Warn, in one line, when a reading command reads a damaged SQLite store: what it shows
    may be incomplete (a damaged page of runs reads as no runs)."""
    import warnings

    db = sqlite_path()
    if db is not None and (problem := damage(db)):
        warnings.warn(f"the tracking store {db} is damaged (PRAGMA quick_check: {problem}); what it shows may be "
                      f"incomplete. {recovery_hint(db)}", StoreWarning, stacklevel=2)


def damage(db: Path) -> str | None:
    """What :func:`quick_check` finds wrong with SQLite file ``db`` (None: sound, or missing),
    checked once per process."""
    if db not in _checked:
        _checked[db] = quick_check(db) if db.exists() else None
    return _checked[db]


def quick_check(db: Path, seconds: float | None = None) -> str | None:
    """The first problems SQLite's ``PRAGMA quick_check`` finds in file ``db``, or None if it
    finds none or runs past ``seconds`` (default ``CHECK_SECONDS``)."""
    import sqlite3

    limit = CHECK_SECONDS if seconds is None else seconds
    deadline = time.monotonic() + limit
    try:
        # read-write (never created): opened read-only, SQLite skips the CHECK constraints, and
        # a damaged row of ``runs`` then passes; the check itself writes nothing
        conn = sqlite3.connect(f"{db.as_uri()}?mode=rw", uri=True, timeout=limit)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            log.warning("the tracking store %s was not checked: PRAGMA quick_check took over %gs "
                        "(AEPIPE_STORE_CHECK_SECONDS)", db, limit)
            return None
        if "locked" in str(exc) or "busy" in str(exc):  # another process is writing it: not damage
            return None
        return str(exc)
    except sqlite3.DatabaseError as exc:  # "database disk image is malformed", "file is not a database"
        return str(exc)
    finally:
        conn.close()
    found = [" ".join(str(r[0]).split()) for r in rows]
    return None if found == ["ok"] else "; ".join(found)


#: what SQLite says of a damaged file
DAMAGED = re.compile(r"disk image is malformed|file is not a database|database corrupt", re.IGNORECASE)


def recovery_hint(db: Path | None = None) -> str:
    """How to get a damaged SQLite store back, in one line."""
    db = db or sqlite_path() or Path("mlflow.db")
    return (f"Restore a backup of {db.name}, or salvage what it holds with the sqlite3 shell: sqlite3 {db} .recover | "
            f"sqlite3 {db.name}.recovered (.dump where .recover fails), then put {db.name}.recovered in its place "
            "and keep the damaged file")


# --- store errors, in one line ---------------------------------------------------------------

#: lines of SQLAlchemy's messages that say nothing of the cause
_NOISE = ("(raised as a result of", "[SQL:", "[parameters:", "(Background on this error at:")


def _lines(exc: BaseException) -> list[str]:
    return [" ".join(line.split()) for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(_NOISE)]


def error_line(exc: BaseException) -> str:
    """One line that says why ``exc`` happened: its first line that is not SQLAlchemy's framing
    ("raised as a result of Query-invoked autoflush", the SQL statement), followed by the root
    cause at the end of its chain (``raise ... from``, a DBAPI error's ``orig``) where that line
    does not already say it."""
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (
            current.__cause__ or (None if current.__suppress_context__ else current.__context__))
    top = (_lines(exc) or [type(exc).__name__])[0]
    root = chain[-1]
    cause = (_lines(root) or [""])[0]
    if root is exc or not cause or cause in top:
        return top
    module = type(root).__module__
    name = type(root).__name__ if module == "builtins" else f"{module}.{type(root).__name__}"
    return f"{top} (cause: {name}: {cause})"


#: Makes the MLflow UI open aepipe's experiments in its model-training view (runs, metrics,
#: charts) rather than the GenAI view (traces) it defaults to since MLflow 3.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def experiment_id(name: str) -> str:
    """The id of experiment ``name``, created (with an explicit artifact location) if missing."""
    mlflow = setup()
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
    mlflow = setup()
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


def git_commit(cwd: str | Path = ".") -> str | None:
    """The commit checked out at ``cwd`` when this process first asked: the code it runs (a
    study's trials ask once, not once each)."""
    return _git_commit(str(Path(cwd).resolve()))


@functools.lru_cache(maxsize=8)
def _git_commit(cwd: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
