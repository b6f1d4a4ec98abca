"""Stores, templates and checkpoints belong where they say: a store template is used only if
aepipe made it, it is a regular file of its own and it is empty; a new store's experiments keep
their artifacts in it; a checkpoint continues only the run it records, of the pipeline that run
logged (the run's ``pipeline.toml``, not the copy inside the checkpoint)."""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from aepipe.config import resolve
from aepipe.errors import ConfigError
from aepipe.tracking.memory import MemoryTracker
from aepipe.tracking.store import artifact_root
from aepipe.tracking.template import MARKER, from_template, template_path
from aepipe.training import train

from conftest import PIPELINES, use_store, QUIET as QUIET_ALL

QUIET = [*QUIET_ALL, "train.patience=0", "train.epochs=1"]


# --- the store template ------------------------------------------------------------------------


def _open(monkeypatch, home: Path):
    from aepipe.tracking import store

    use_store(monkeypatch, home)
    return store.connect()


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def used(tmp_path_factory):
    """A store that was used (two experiments, a run, a registered model), a copy of the template
    aepipe keeps (valid: made from the machine's, as every store of the suite is) and its name."""
    from mlflow import MlflowClient

    from aepipe.tracking import default_tracker

    root = tmp_path_factory.mktemp("binding")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mlflow = _open(mp, root / "used")
        template = template_path(mlflow)
        if not template.is_file() or template.is_symlink():
            pytest.skip(f"no store template could be kept at {template}")
        good = shutil.copyfile(template, root / "good.db")
        tracker = default_tracker()
        run = tracker.start("someone-elses", "leaked")
        run.log_metrics({"loss": 1.0}, 1)
        run.finish("FINISHED")
        MlflowClient().create_registered_model("leaked-model")
    return root / "used" / "mlflow.db", Path(good), template.name


def _mark(db: Path) -> None:
    """Give ``db`` aepipe's template marker, as a forger copying a used store would."""
    with sqlite3.connect(db) as con:
        con.execute(f"CREATE TABLE {MARKER} (filled TEXT NOT NULL)")
        con.execute(f"INSERT INTO {MARKER} VALUES ('alembic_version,experiments')")


def _place(kind: str, cache: Path, name: str, used_db: Path, good: Path) -> Path:
    """Put a template of ``kind`` at ``cache / name``."""
    template = cache / name
    cache.mkdir(parents=True, exist_ok=True)
    if kind == "copy of a used store":
        shutil.copyfile(used_db, template)
    elif kind == "marked copy of a used store":
        shutil.copyfile(used_db, template)
        _mark(template)
    elif kind == "symbolic link to a used store":
        marked = cache.parent / "marked-used.db"
        shutil.copyfile(used_db, marked)
        _mark(marked)
        template.symlink_to(marked)
    elif kind == "symbolic link to a good template":
        template.symlink_to(good)
    elif kind == "hard link to a good template":
        os.link(shutil.copyfile(good, cache.parent / "good-linked.db"), template)
    elif kind == "good template with an experiment":
        shutil.copyfile(good, template)
        with sqlite3.connect(template) as con:
            con.execute("INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage) "
                        "VALUES (7, 'planted', '/elsewhere', 'active')")
    elif kind == "good template with a registered model":
        shutil.copyfile(good, template)
        with sqlite3.connect(template) as con:
            con.execute(
                "INSERT INTO registered_models (name, creation_time, last_updated_time) VALUES ('planted', 0, 0)"
            )
    else:
        raise AssertionError(kind)
    return template


REFUSED = {
    "copy of a used store": "aepipe did not make it (no marker)",
    "marked copy of a used store": "it holds 1 row of runs",
    "symbolic link to a good template": "a symbolic link",
    "hard link to a good template": "a file with 2 names (hard links)",
    "good template with an experiment": "it holds 2 experiments ('Default', 'planted'), not only Default",
    "good template with a registered model": "it holds 1 row of registered_models",
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_a_template_aepipe_did_not_make_or_that_is_not_empty_is_ignored(kind, used, tmp_path, monkeypatch, caplog):
    import mlflow

    used_db, good, name = used
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    use_store(monkeypatch, tmp_path / "new")
    (tmp_path / "new").mkdir()
    template = _place(kind, tmp_path / "cache" / "aepipe", name, used_db, good)
    assert template == template_path(mlflow)
    with caplog.at_level(logging.WARNING, logger="aepipe.tracking"):
        assert from_template(mlflow, tmp_path / "new" / "mlflow.db", artifact_root()) is False
    assert not (tmp_path / "new" / "mlflow.db").exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"the tracking store template {template} was ignored: {REFUSED[kind]}; the new store is created by MLflow "
        "and kept as the template instead"]
    assert os.listdir(tmp_path / "new") == [], "no partial copy left behind"


def test_the_template_aepipe_made_is_copied_unmarked_and_points_into_the_new_store(used, tmp_path, monkeypatch):
    import mlflow

    _, good, name = used
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "aepipe").mkdir(parents=True)
    shutil.copyfile(good, tmp_path / "cache" / "aepipe" / name)
    use_store(monkeypatch, tmp_path / "new")
    (tmp_path / "new").mkdir()
    assert from_template(mlflow, tmp_path / "new" / "mlflow.db", artifact_root()) is True
    db = tmp_path / "new" / "mlflow.db"
    assert _rows(db, f"SELECT name FROM sqlite_master WHERE name = '{MARKER}'") == []
    assert _rows(db, "SELECT artifact_location FROM experiments") == [((tmp_path / "new" / "artifacts").as_uri(),)]


def test_a_new_store_takes_nothing_from_a_used_store_posing_as_the_template(used, tmp_path, monkeypatch, caplog):
    """The whole path, with a link to a used store that even holds aepipe's marker: the new store
    is MLflow's own (no run, no registered model, only Default), every experiment's artifacts in
    it, and the link is replaced by a good template; what it pointed to is left as it was."""
    from mlflow import MlflowClient

    from aepipe.tracking import default_tracker

    used_db, good, name = used
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    template = _place("symbolic link to a used store", tmp_path / "cache" / "aepipe", name, used_db, good)
    pointed = template.resolve()
    before = pointed.read_bytes()
    with caplog.at_level(logging.WARNING, logger="aepipe.tracking"):
        _open(monkeypatch, tmp_path / "new")
    assert f"{template} was ignored: a symbolic link" in caplog.text
    new = tmp_path / "new"
    client = MlflowClient()
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert client.search_registered_models() == []
    assert _rows(new / "mlflow.db", "SELECT count(*) FROM runs") == [(0,)]
    run = default_tracker().start("mine", "r")
    run.finish("FINISHED")
    inside = (new / "artifacts").as_uri()
    for experiment in client.search_experiments():
        assert experiment.artifact_location == inside, experiment.name
    assert client.get_run(run.run_id).info.artifact_uri.startswith(inside + "/")
    # the template now is aepipe's own, a regular file; a link's target is untouched
    assert not template.is_symlink() and template.stat().st_nlink == 1
    assert _rows(template, f"SELECT count(*) FROM {MARKER}") == [(1,)]
    assert _rows(template, "SELECT count(*) FROM runs") == [(0,)]
    assert pointed.read_bytes() == before


# --- checkpoints bound to their run ---------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Runs A (code_dim 32) and B (code_dim 8) of the vanilla digits pipeline, one epoch each, in
    an in-memory tracker, with the bytes of their checkpoints."""
    from aepipe.plugins import get_plugin_manager

    pm = get_plugin_manager()
    tracker = MemoryTracker(tmp_path_factory.mktemp("two-runs"))
    a = train(resolve(pm, PIPELINES / "vanilla.toml", QUIET), pm, tracker=tracker).run_id
    b = train(resolve(pm, PIPELINES / "vanilla.toml", [*QUIET, "model.code_dim=8"]), pm, tracker=tracker).run_id
    ckpt = {r: tracker.root / r / "artifacts" / "checkpoint" / "checkpoint.pt" for r in (a, b)}
    return pm, tracker, a, b, ckpt, {r: p.read_bytes() for r, p in ckpt.items()}


@pytest.fixture
def runs(two_runs):
    pm, tracker, a, b, ckpt, original = two_runs
    yield two_runs
    for r, data in original.items():  # every test starts from the runs' own checkpoints
        ckpt[r].write_bytes(data)


def _edit(path: Path, **state) -> None:
    """Rewrite the checkpoint at ``path`` with ``state``'s fields changed (None: removed, as in a
    checkpoint written before the field existed)."""
    payload = torch.load(path, weights_only=True)
    for key, value in state.items():
        if value is None:
            payload["state"].pop(key)
        else:
            payload["state"][key] = value
    torch.save(payload, path)


def test_a_checkpoint_records_its_run_and_its_pipeline_digest(runs):
    from aepipe.training.resume import pipeline_digest

    pm, tracker, a, b, ckpt, _ = runs
    for run_id in (a, b):
        state = torch.load(ckpt[run_id], weights_only=True)["state"]
        logged = (tracker.root / run_id / "artifacts" / "pipeline.toml").read_text()
        assert state["run_id"] == run_id and state["pipeline_digest"] == pipeline_digest(logged)
    assert torch.load(ckpt[a], weights_only=True)["state"]["pipeline_digest"] != \
        torch.load(ckpt[b], weights_only=True)["state"]["pipeline_digest"]


def test_another_runs_checkpoint_is_refused_and_the_run_is_left_as_it_was(runs):
    pm, tracker, a, b, ckpt, _ = runs
    before = copy.deepcopy(tracker.runs[b])
    shutil.copyfile(ckpt[a], ckpt[b])
    with pytest.raises(
        ConfigError,
        match=rf"^--resume {b}: its checkpoint is run {a}'s, not run {b}'s \(copied from another "
        rf"run\?\); refusing to continue run {b} from it$",
    ):
        train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=2",))
    # relabelled as B's, its pipeline (A's) still gives it away, named by the key that differs
    _edit(ckpt[b], run_id=b)
    with pytest.raises(
        ConfigError,
        match=rf"^--resume {b}: its checkpoint was written for another pipeline than run {b}'s "
        r"logged pipeline.toml \(first at model.code_dim: run has 8, checkpoint 32\); "
        "refusing to continue the run from it$",
    ):
        train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=2",))
    # so is an old checkpoint of A (no run id, no digest): judged by the pipeline inside it
    shutil.copyfile(ckpt[a], ckpt[b])
    _edit(ckpt[b], run_id=None, pipeline_digest=None)
    with pytest.raises(
        ConfigError, match=r"written for another pipeline .* \(first at model.code_dim: run has 8, checkpoint 32\)"
    ):
        train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=2",))
    assert tracker.runs[b] == before, "nothing was written to run B"


def test_a_checkpoint_whose_digest_is_not_the_logged_pipelines_is_refused(runs):
    pm, tracker, a, b, ckpt, _ = runs
    other = torch.load(ckpt[a], weights_only=True)["state"]["pipeline_digest"]
    _edit(ckpt[b], pipeline_digest=other)
    with pytest.raises(
        ConfigError,
        match=rf"^--resume {b}: its checkpoint was written for another pipeline than run {b}'s "
        rf"logged pipeline.toml \(digest {other[:12]}, the run's [0-9a-f]{{12}}\)",
    ):
        train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=2",))
    # without the logged pipeline there is nothing to check a checkpoint against: refused too
    logged = tracker.root / b / "artifacts" / "pipeline.toml"
    text = logged.read_text()
    logged.unlink()
    try:
        with pytest.raises(
            ConfigError,
            match=rf"^--resume {b}: run {b} has no logged pipeline.toml \(the pipeline it was started "
            r"with\), so its checkpoint cannot be checked against it; start the run again$",
        ):
            train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=2",))
    finally:
        logged.write_text(text)


def test_the_logged_pipeline_is_the_runs_and_old_checkpoints_of_the_run_resume(runs):
    """B's checkpoint whose embedded pipeline was changed to A's (its digest still B's) resumes
    with B's logged pipeline (the embedded one would not even load B's weights); an old
    checkpoint of B (no run id, no digest) resumes and is bound to B from then on."""
    pm, tracker, a, b, ckpt, _ = runs
    embedded_a = torch.load(ckpt[a], weights_only=True)["state"]["pipeline"]
    _edit(ckpt[b], pipeline=embedded_a)
    result = train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=2",))
    assert result.epochs == 2 and result.model.spec.code_dim == 8
    assert [s for s, _ in tracker.runs[b].metrics["loss"]] == [1, 2]

    _edit(ckpt[b], run_id=None, pipeline_digest=None)
    result = train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=3",))
    assert result.epochs == 3 and result.model.spec.code_dim == 8
    assert torch.load(ckpt[b], weights_only=True)["state"]["run_id"] == b


#: a TOML value nested deeper than a pipeline may be (aepipe.config.MAX_DEPTH is 64)
DEEP = "x = " + "[" * 70 + "]" * 70 + "\n"
TOO_DEEP = "nested more than 64 levels deep"


def test_a_runs_oversized_or_over_nested_logged_pipeline_is_refused_in_one_line(runs):
    """The run's artifact pipeline.toml is read within the bounds of a pipeline file, before the
    run is touched."""
    pm, tracker, a, b, ckpt, _ = runs
    logged = tracker.root / b / "artifacts" / "pipeline.toml"
    text = logged.read_text()
    before = copy.deepcopy(tracker.runs[b])
    try:
        logged.write_text(text + DEEP)
        with pytest.raises(
            ConfigError, match=rf"^--resume {b}: run {b}'s logged pipeline.toml: line \d+: {TOO_DEEP}[^\n]*$"
        ):
            train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=2",))
        logged.write_text(text + "#" * (1 << 20))
        with pytest.raises(
            ConfigError,
            match=rf"^--resume {b}: run {b}'s logged pipeline.toml: {len(text) + (1 << 20)} bytes; "
            r"a pipeline file may hold at most 1048576 \(1 MiB\)$",
        ):
            train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=2",))
    finally:
        logged.write_text(text)
    assert tracker.runs[b] == before, "nothing was written to run B"


@pytest.mark.parametrize("bad", ["deep", "large"])
def test_a_checkpoints_oversized_or_over_nested_pipeline_is_refused_in_one_line(runs, bad):
    """The pipeline inside a checkpoint (its digest still the run's, so only reading it tells) is
    read within the bounds of a pipeline file too."""
    pm, tracker, a, b, ckpt, _ = runs
    inside = torch.load(ckpt[b], weights_only=True)["state"]["pipeline"]
    _edit(ckpt[b], pipeline=inside + (DEEP if bad == "deep" else "#" * (1 << 20)))
    expected = rf"line \d+: {TOO_DEEP}[^\n]*" if bad == "deep" else \
        rf"{len(inside) + (1 << 20)} characters; a pipeline may hold at most 1048576 \(1 MiB\)"
    with pytest.raises(ConfigError, match=rf"^--resume {b}: the pipeline inside its checkpoint: {expected}$"):
        train(None, pm, resume=b, tracker=tracker, overrides=("train.epochs=2",))


def test_a_foreign_checkpoint_is_one_line_and_exit_2_on_the_command_line(store):
    """The report's case through the CLI and MLflow: run A's checkpoint copied into run B's
    artifacts; `--resume B` is refused in one line naming both, and B is left as it was."""
    from click.testing import CliRunner
    from mlflow import MlflowClient

    from aepipe.cli import cli

    sets = sum((["--set", q] for q in [*QUIET, 'tracking.experiment="binding"']), [])
    ids = []
    for extra in ([], ["--set", "model.code_dim=8"]):
        out = CliRunner().invoke(cli, ["train", str(PIPELINES / "vanilla.toml"), "-q", *sets, *extra])
        assert out.exit_code == 0, out.output
        ids.append(re.search(r"[0-9a-f]{32}", out.output).group(0))
    a, b = ids
    client = MlflowClient()
    folder = {r: Path(client.get_run(r).info.artifact_uri.removeprefix("file://")) / "checkpoint" for r in ids}
    shutil.copyfile(folder[a] / "checkpoint.pt", folder[b] / "checkpoint.pt")
    before = client.get_run(b)
    out = CliRunner().invoke(cli, ["train", "--resume", b, "--set", "train.epochs=2"])
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert lines == [f"Error: --resume {b}: its checkpoint is run {a}'s, not run {b}'s (copied from another run?); "
                     f"refusing to continue run {b} from it"]
    after = client.get_run(b)
    assert (after.info.status, after.info.end_time, after.data.metrics, after.data.params) == \
        (before.info.status, before.info.end_time, before.data.metrics, before.data.params)
    assert [m.step for m in client.get_metric_history(b, "loss")] == [1]
    # run A's logged pipeline over-nested: one line naming the run and the file, exit 2
    logged = folder[a].parent / "pipeline.toml"
    logged.write_text(logged.read_text() + DEEP)
    out = CliRunner().invoke(cli, ["train", "--resume", a, "--set", "train.epochs=2"])
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"Error: --resume {a}: run {a}'s logged pipeline.toml: line \d+: {TOO_DEEP}.*", lines[0]
    )
