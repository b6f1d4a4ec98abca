"""Stores that cannot be written, and damaged ones: commands that write call :func:`check_writable`
before any work (a read-only store, or a SQLite file that ``PRAGMA quick_check`` finds damaged, is
refused in one line); commands that read warn of a damaged store (:func:`warn_if_damaged`)."""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from pathlib import Path

from aepipe.errors import StoreError
from aepipe.tracking.store import connect, local_root, memory, tracking_uri, uses_local_store

log = logging.getLogger("aepipe.tracking")

#: errno values that mean "this file or folder cannot be written" (not "it is missing")
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}

#: seconds ``PRAGMA quick_check`` may take before it is given up (the store is then trusted)
CHECK_SECONDS = float(os.environ.get("AEPIPE_STORE_CHECK_SECONDS", "10"))


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
        connect()  # creates a new store where it can; reads an existing one
    local = uses_local_store()
    paths = [db.parent, db] + ([local_root() / "artifacts", local_root() / "checkpoints"] if local else [])
    for path in paths:
        if path.exists() and (reason := _cannot_write(path)):
            where = "AEPIPE_HOME" if local else "MLFLOW_TRACKING_URI"
            raise StoreError(
                f"{what} writes runs into the tracking store {local_root() if local else db}, which {reason}: "
                f"work on a writable copy (set {where} to it), or make it writable"
            )
    if db.exists() and (problem := damage(db)):
        raise StoreError(f"{what}: the tracking store {db} is damaged (PRAGMA quick_check: {problem}); nothing was "
                         f"written. {recovery_hint(db)}")


def writable_and_sound(uri: str | None = None) -> bool:
    """False for a local store this process found read-only, or a SQLite store that
    :func:`damage` finds damaged: what writes on its own (the sweep of dead runs) leaves them be."""
    uri = uri or tracking_uri()
    db = sqlite_path(uri)
    return uri not in memory.read_only and (db is None or damage(db) is None)


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
    if db not in memory.checked:
        memory.checked[db] = quick_check(db) if db.exists() else None
    return memory.checked[db]


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
