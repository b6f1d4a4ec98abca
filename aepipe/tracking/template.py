"""New tracking stores from a template.

MLflow creates a new SQLite store by running every schema migration since its first (seconds,
most of a short run's fixed cost). The first store this machine creates with an MLflow version
is kept, empty, as that version's template; later new stores start as a copy of it. The cache
is a folder anyone who can write there may change: a template is used only if it is a regular
file of its own (no symbolic or hard link), aepipe's marker is in it, and the copy holds no run,
no registered model and no experiment but ``Default``; anything else is ignored, with a warning,
and replaced by the next store MLflow creates.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

log = logging.getLogger("aepipe.tracking")

#: the table aepipe adds to a template (dropped from every copy); its one row lists the tables
#: MLflow itself filled when it created the store
MARKER = "aepipe_store_template"
#: what a template may hold however it was made: runs, registered models and their versions never
NEVER_FILLED = ("runs", "registered_models", "model_versions")
#: an empty store is well under 1 MiB; a larger file is not read
TEMPLATE_BYTES = 16 << 20


def template_path(mlflow) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aepipe"
    return cache / f"mlflow-{mlflow.__version__}-empty.db"


def _bind_default(con, artifacts: str) -> None:
    """Point the store's ``Default`` experiment into the store's own artifacts folder, as
    aepipe's own experiments are (MLflow points it at ``./mlruns/0`` of the process that created
    the store, wherever that is)."""
    con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (artifacts,))


def _copy_regular_file(src: Path, dst: Path) -> None:
    """Copy the bytes of ``src`` to a new file ``dst``, refusing (OSError with the reason) a
    symbolic link, anything but a regular file, a file with another name (a hard link) or one
    larger than :data:`TEMPLATE_BYTES`. Checked on the open file: nothing is followed."""
    import stat

    fd = os.open(
        src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    )
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


def from_template(mlflow, db: Path, artifacts: str) -> bool:
    """Start ``db`` as a copy of this MLflow version's empty store, if there is one that passes
    :func:`_template_problem`; its ``Default`` experiment then points to ``artifacts`` (the new
    store's artifacts folder)."""
    import sqlite3

    template = template_path(mlflow)
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
                    _bind_default(con, artifacts)
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


def save_template(mlflow, db: Path) -> None:
    """Keep the store MLflow just created, still empty and marked as aepipe's, as this version's
    template, in place of whatever is there (a template that was not used: see
    :func:`from_template`; a link is replaced, never written through)."""
    import sqlite3

    template = template_path(mlflow)
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


def bind_local_default(db: Path, artifacts: str) -> None:
    """Point the ``Default`` experiment of a store MLflow just created to ``artifacts`` (the store's
    artifacts folder)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
            _bind_default(con, artifacts)
    except sqlite3.Error as exc:
        log.debug("the Default experiment of %s keeps MLflow's artifact location: %s", db, exc)
