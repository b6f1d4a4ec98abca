"""Stores that are read-only or damaged: reading commands read them, writing commands refuse in
one line before any work, store errors show their root cause, and a run whose files are gone
says they are missing (and where they were looked for)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aepipe.cli import cli
from aepipe.tracking import health, store
from aepipe.tracking.error_line import error_line

from conftest import PIPELINES, QUIET_KEEP_MODEL
from helpers import one_line_error as _one_line_error

QUIET = [*QUIET_KEEP_MODEL, "train.epochs=1"]
TRAIN = ["train", str(PIPELINES / "vanilla.toml"), "-q", *sum((["--set", q] for q in QUIET), [])]


def _use(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point aepipe at the local store ``home`` as a new command would find it."""
    monkeypatch.setenv("AEPIPE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store.forget()


def _train(home: Path, *overrides: str) -> str:
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import train

    pm = get_plugin_manager()
    with pytest.MonkeyPatch.context() as mp:
        _use(mp, home)
        return train(resolve(pm, PIPELINES / "vanilla.toml", [*QUIET, *overrides]), pm).run_id


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """A local store holding one finished run with its model."""
    home = tmp_path_factory.mktemp("trained") / "mlruns"
    return home, _train(home)


def _files(root: Path) -> dict[str, str]:
    """Every file under ``root`` and a digest of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _mount_read_only(src: Path, dst: Path) -> None:
    """A read-only bind mount of ``src`` at ``dst`` (skips the test where mounting is refused)."""
    bind = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"a read-only bind mount is not permitted here (mount --bind: {bind.stderr.strip()})")
    remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], capture_output=True, text=True)
    if remount.returncode != 0:
        subprocess.run(["umount", "-l", str(dst)], check=True)
        pytest.skip(f"a read-only bind mount is not permitted here (remount,bind,ro: {remount.stderr.strip()})")
    with pytest.raises(OSError) as probe:
        (dst / ".probe").touch()
    assert probe.value.errno == errno.EROFS


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` made read-only: a read-only bind mount onto itself for root (whom permissions
    do not stop), the write bits taken away for anyone else."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    _mount_read_only(path, path)
    try:
        yield
    finally:  # lazily: MLflow keeps its connections to a store open
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def read_only_store(home: Path, tmp_path: Path):
    """``home`` made read-only (its runs' artifact paths included), and the path to open it by:
    for root a second read-only mount at a path this process has not opened yet, so that MLflow
    connects anew as a new command does (its connections to ``home`` predate the mount)."""
    with read_only(home):
        if os.geteuid() != 0:
            yield home
            return
        view = tmp_path / "view"
        view.mkdir()
        _mount_read_only(home, view)
        try:
            yield view
        finally:
            subprocess.run(["umount", "-l", str(view)], check=True)


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training (data, model, run) must not start: the refusal comes before any work."""
    import aepipe.training

    def refuse(*args, **kwargs):
        raise AssertionError("training started on a store that cannot take it")

    monkeypatch.setattr(aepipe.training, "train", refuse)


# --- read-only stores -----------------------------------------------------------------------


def test_read_only_store_serves_compare_and_encode(trained, tmp_path, monkeypatch):
    """The store on a read-only mount (an archived result, a shared mount): `compare` and
    `encode` work (they tracebacked on creating `.store.lock`) and nothing in it changes."""
    home, run_id = trained
    np.save(tmp_path / "x.npy", np.zeros((3, 64)))
    before = _files(home)
    with read_only_store(home, tmp_path) as seen:
        _use(monkeypatch, seen)
        compare = CliRunner().invoke(cli, ["compare", "--format", "csv"])
        assert compare.exit_code == 0 and run_id in compare.stdout, compare.output
        encode = CliRunner().invoke(cli, ["encode", run_id, str(tmp_path / "x.npy"), "-o", str(tmp_path / "codes.npy")])
        assert encode.exit_code == 0, encode.output
        assert store.uses_local_store() and store.local_root() == seen.resolve()
    assert np.load(tmp_path / "codes.npy").shape == (3, 32)
    assert _files(home) == before


def test_writing_commands_refuse_a_read_only_store_in_one_line_before_any_work(trained, tmp_path, monkeypatch):
    """`train` and `tune` on a read-only store: one line that says so and where, exit 2,
    before any data is loaded; nothing in the store changes."""
    home, _ = trained
    _no_training(monkeypatch)
    before = _files(home)
    with read_only_store(home, tmp_path) as seen:
        _use(monkeypatch, seen)
        line = _one_line_error(CliRunner().invoke(cli, TRAIN))
        assert "train writes runs into the tracking store" in line and "read-only" in line and str(seen) in line, line
        tune = _one_line_error(CliRunner().invoke(cli, ["tune", str(PIPELINES / "vanilla.toml"), "--n-trials", "1"]))
        assert "tune writes runs into the tracking store" in tune and "read-only" in tune, tune
        workers = _one_line_error(CliRunner().invoke(cli, ["tune", str(PIPELINES / "vanilla.toml"), "--n-trials", "1",
                                                           "--n-workers", "2"]))
        assert "read-only" in workers, workers
    assert _files(home) == before


def test_a_store_whose_folder_cannot_be_written_is_read_but_not_written(trained, monkeypatch, tmp_path):
    """The same logic without a mount: opening `.store.lock` and the write probes fail with
    EACCES (as for a user without write permission): `compare` and `encode` read the store,
    `train` is refused in one line."""
    home, run_id = trained
    _use(monkeypatch, home)
    _no_training(monkeypatch)
    before = _files(home)
    real_open = open

    def denied(path, mode="r", *args, **kwargs):
        if Path(path).resolve().is_relative_to(home) and any(c in mode for c in "wax+"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, mode, *args, **kwargs)

    def no_temp_file(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

    monkeypatch.setattr(store, "open", denied, raising=False)  # store.py's own open(): the lock
    monkeypatch.setattr(health, "open", denied, raising=False)  # health.py's: the probes
    monkeypatch.setattr("tempfile.TemporaryFile", no_temp_file)
    compare = CliRunner().invoke(cli, ["compare", "--format", "csv"])
    assert compare.exit_code == 0 and run_id in compare.stdout, compare.output
    np.save(tmp_path / "x.npy", np.zeros((2, 64)))
    encode = CliRunner().invoke(cli, ["encode", run_id, str(tmp_path / "x.npy"), "-o", str(tmp_path / "c.npy")])
    assert encode.exit_code == 0, encode.output
    assert _files(home) == before
    line = _one_line_error(CliRunner().invoke(cli, TRAIN))
    assert "read-only" in line and "Permission denied" in line, line


def test_no_store_and_no_way_to_create_one_is_one_line(tmp_path, monkeypatch):
    """A reading command pointed at a folder where no store exists and none can be made."""
    home = tmp_path / "archive" / "mlruns"
    home.mkdir(parents=True)
    _use(monkeypatch, home)
    with read_only(home):
        line = _one_line_error(CliRunner().invoke(cli, ["compare"]))
    assert f"no tracking store in {home}, and none can be created there" in line, line


# --- damaged stores -------------------------------------------------------------------------


def _damage(db: Path, table: str, where: str) -> None:
    """Overwrite bytes of ``table``'s first page: its header, or the bytes of a finished run's
    status inside it (a row MLflow goes on reading and writing around)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    start = (page - 1) * size
    with open(db, "r+b") as f:
        f.seek(start)
        content = f.read(size)
        offset = content.rindex(b"FINISHED") if where == "status" else 0
        f.seek(start + offset)
        f.write(b"\xff" * 8)


@pytest.mark.parametrize("table, where", [("runs", "status"), ("tags", "header")])
def test_train_refuses_a_damaged_store_before_writing_with_a_recovery_hint(
    trained, tmp_path, monkeypatch, table, where
):
    """Bytes overwritten in mlflow.db: a damaged row of `runs` passes every MLflow write (and
    `train` exited 0 writing into it); `PRAGMA quick_check` finds it, and `train` refuses in one
    line naming the file, what the check found and how to recover. The file is left as it was;
    `compare` warns that what it shows may be incomplete."""
    home = tmp_path / "mlruns"
    shutil.copytree(trained[0], home)
    _damage(home / "mlflow.db", table, where)
    _use(monkeypatch, home)
    before = _files(home)
    with monkeypatch.context() as mp:
        _no_training(mp)
        line = _one_line_error(CliRunner().invoke(cli, TRAIN))
    assert f"the tracking store {home / 'mlflow.db'} is damaged (PRAGMA quick_check: " in line, line
    assert "nothing was written" in line and ".recover" in line and "Restore a backup" in line, line
    assert _files(home) == before
    with pytest.warns(health.StoreWarning, match=r"is damaged \(PRAGMA quick_check: .*what it shows may be incomplete"):
        CliRunner().invoke(cli, ["compare"])


def test_a_damaged_row_is_missed_by_mlflow_and_found_by_the_check_within_its_bound(trained, tmp_path, caplog):
    """The damage `train` is refused for: MLflow writes into the file without a word, the
    check finds it; a check that runs past its time is given up (the store trusted), not
    waited for."""
    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copy(trained[0] / "mlflow.db", db)
    _damage(db, "runs", "status")
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    run = client.create_run(client.get_experiment_by_name("vanilla").experiment_id)
    client.set_terminated(run.info.run_id)  # accepted
    assert health.quick_check(db) == "CHECK constraint failed in runs"
    with caplog.at_level("WARNING", logger="aepipe.tracking"):
        assert health.quick_check(db, seconds=0) is None
    assert "was not checked" in caplog.text


# --- store errors: the root cause -----------------------------------------------------------


def test_store_error_line_is_the_root_cause_not_sqlalchemys_framing(tmp_path):
    """SQLAlchemy's autoflush error starts with "(raised as a result of Query-invoked
    autoflush ...)": the line shown is the cause under it."""
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = "rows"
        id = sa.Column(sa.Integer, primary_key=True)

    db = tmp_path / "x.db"
    Base.metadata.create_all(sa.create_engine(f"sqlite:///{db}"))
    engine = sa.create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")
    with Session(engine) as session, pytest.raises(sa.exc.OperationalError) as info:
        session.add(Row(id=1))
        session.query(Row).all()  # the autoflush writes, and fails
    assert str(info.value).startswith("(raised as a result of Query-invoked autoflush")
    line = error_line(info.value)
    assert line == "(sqlite3.OperationalError) attempt to write a readonly database", line

    class Wrapped(Exception):
        pass

    try:  # a wrapper that says something else: the root cause is added
        raise Wrapped("the store refused") from info.value
    except Wrapped as exc:
        assert (
            error_line(exc)
            == "the store refused (cause: sqlite3.OperationalError: attempt to write a readonly database)"
        )


def test_a_write_refused_by_a_read_only_store_shows_the_root_cause(trained, tmp_path, monkeypatch):
    """The tracker's writer meets a read-only store: its error names SQLite's cause, not
    SQLAlchemy's autoflush framing ("raised as a result of Query-invoked autoflush")."""
    from aepipe.errors import RunNotFoundError
    from aepipe.tracking.mlflow_tracker import MlflowTracker

    home, run_id = trained
    with read_only_store(home, tmp_path) as seen:
        _use(monkeypatch, seen)
        run = MlflowTracker().open(run_id)
        run.log_metrics({"extra": 1.0}, step=99)
        with pytest.raises(RunNotFoundError) as info:
            run.close()
    message = str(info.value)
    assert "the tracking store refused a write: " in message and "attempt to write a readonly database" in message, (
        message
    )
    assert "autoflush" not in message and "\n" not in message


def test_cli_store_failure_shows_the_cause_and_the_recovery_hint(trained, tmp_path, monkeypatch):
    """A reading command on a store whose experiments page is damaged: one line with SQLite's
    cause and how to recover, no traceback."""
    home = tmp_path / "mlruns"
    shutil.copytree(trained[0], home)
    _damage(home / "mlflow.db", "experiments", "header")
    _use(monkeypatch, home)
    line = _one_line_error(CliRunner().invoke(cli, ["compare"]))
    assert "failed: " in line and "database disk image is malformed" in line and ".recover" in line, line


# --- missing artifacts ----------------------------------------------------------------------


def test_missing_artifacts_are_named_not_taken_for_a_model_never_logged(trained, monkeypatch, tmp_path):
    """`encode` of a run whose model, or whole artifact folder, was deleted says they are
    missing and where they were looked for (it said the run "logged none"); a run that logged
    no model says so."""
    home, run_id = trained
    other = tmp_path / "mlruns"
    shutil.copytree(home, other)  # a store made already: no schema to create
    unlogged = _train(other, "tracking.log_model=false")
    np.save(tmp_path / "x.npy", np.zeros((2, 64)))

    def encode(run: str) -> str:
        return _one_line_error(
            CliRunner().invoke(cli, ["encode", run, str(tmp_path / "x.npy"), "-o", str(tmp_path / "c.npy")])
        )

    _use(monkeypatch, other)
    assert "logged no model (tracking.log_model = false)" in encode(unlogged)
    _use(monkeypatch, home)
    folder = home / "artifacts" / run_id
    artifacts, aside = folder / "artifacts", tmp_path / "aside"
    shutil.copytree(folder, aside)  # the module's run: put back as it was
    try:
        shutil.rmtree(artifacts / "aepipe-model")
        line = encode(run_id)
        assert f"its model is missing: nothing at {artifacts / 'aepipe-model'} (deleted or moved" in line, line
        shutil.rmtree(folder)
        line = encode(run_id)
        assert f"its artifacts are missing: no folder {artifacts}" in line, line
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(aside, folder)
