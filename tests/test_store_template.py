"""A new local store starts as a copy of the empty store MLflow created first on this machine
(MLflow's schema migrations take seconds: most of a short run's fixed cost), and is the same
store: it takes runs, and its ``Default`` experiment keeps its artifacts in the new store."""

from __future__ import annotations

import sqlite3

import pytest

from aepipe.tracking import template as template_module
from aepipe.tracking.template import MARKER, template_path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache" / "aepipe"


def _open(monkeypatch, home):
    from aepipe.tracking import store
    from conftest import use_store

    use_store(monkeypatch, home)
    return store.connect()


def _default_location(db):
    with sqlite3.connect(db) as con:
        return con.execute("SELECT artifact_location FROM experiments WHERE experiment_id = 0").fetchone()[0]


def test_the_first_store_becomes_the_template_and_the_next_is_a_copy(cache, tmp_path, monkeypatch):
    mlflow = _open(monkeypatch, tmp_path / "a")
    template = template_path(mlflow)
    assert template.parent == cache and template.is_file()
    copies = []
    real = template_module.from_template
    monkeypatch.setattr(
        template_module, "from_template", lambda m, db, a: copies.append((db, real(m, db, a))) or copies[-1][1]
    )
    assert _default_location(tmp_path / "a" / "mlflow.db") == (tmp_path / "a" / "artifacts").as_uri()
    monkeypatch.chdir(tmp_path / "a")  # MLflow would point Default at the creating process's ./mlruns/0
    _open(monkeypatch, tmp_path / "b")
    assert copies == [(tmp_path / "b" / "mlflow.db", True)]
    assert _default_location(tmp_path / "b" / "mlflow.db") == (tmp_path / "b" / "artifacts").as_uri()
    from aepipe.tracking import default_tracker

    tracker = default_tracker()  # the copy is a working store: runs, metrics, the registry
    run = tracker.start("copied", "r")
    run.log_metrics({"loss": 1.5}, 1)
    run.finish("FINISHED")
    assert tracker.get_run(run.run_id).metrics["loss"] == 1.5
    with sqlite3.connect(template) as con:  # the template stays empty
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_a_template_mlflow_does_not_take_is_replaced_by_a_store_created_the_usual_way(cache, tmp_path, monkeypatch):
    import mlflow as mlflow_module

    template = template_path(mlflow_module)
    template.parent.mkdir(parents=True)
    template.write_bytes(b"not a database")
    _open(monkeypatch, tmp_path / "c")
    with sqlite3.connect(tmp_path / "c" / "mlflow.db") as con:
        assert con.execute("SELECT name FROM experiments").fetchall() == [("Default",)]
    with sqlite3.connect(template) as con:  # and the template is replaced by that store, marked as aepipe's
        assert con.execute(f"SELECT count(*) FROM {MARKER}").fetchone()[0] == 1
