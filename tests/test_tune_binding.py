"""A study is what it tunes (issue 30): its fingerprint (the pipeline apart from the tuned keys and
how much to run, the objective, the search space) keeps other pipelines, objectives and spaces out;
default names of two pipelines do not collide; a registered model holds one study's models; names
are checked before the first trial; a failure while recording leaves nothing RUNNING; the summary
puts each value under its own parameter. Tiny studies: one trial of one epoch on the digits."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import store_at, use_store

RUN_ID_LIKE = "0123456789abcdef0123456789abcdef"


def _pipeline(folder: Path, variant: str, experiment: str,
              space: str = '"train.lr" = { type = "float", low = 1e-3, high = 1e-2, log = true }',
              extra: str = "") -> Path:
    """``folder/pipeline.toml``: a one-trial, one-epoch study of ``variant`` on the digits."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.toml"
    path.write_text(textwrap.dedent(f"""
        variant = "{variant}"
        [model]
        code_dim = 4
        [train]
        epochs = 1
        patience = 0
        [tracking]
        experiment = "{experiment}"
        log_images = false
        log_dataset = false
        [tune]
        n_trials = 1
        sampler = "random"
        pruner = "none"
        {extra}
        [tune.space]
        """) + space + "\n")
    return path


def _tune_here(*args: str) -> subprocess.CompletedProcess:
    from click.testing import CliRunner

    from aepipe.cli import cli

    result = CliRunner().invoke(cli, ["tune", *args])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _one_line(out: subprocess.CompletedProcess, progress: bool = False) -> str:
    """The error line of a refused command: its only line on stderr (``progress``: its last,
    after the study's progress lines)."""
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert (progress or len(lines) == 1) and "Traceback" not in out.stderr and lines[-1].startswith("Error: "), (
        out.stderr
    )
    return lines[-1]


def _runs(home: Path) -> list:
    """Every run of the store (of every experiment)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from aepipe import tracking

    tracking.setup()
    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000) if ids else []


def _studies(home: Path) -> dict[str, int]:
    """The studies of the store's journal and how many trials each holds."""
    import optuna

    from aepipe.tune import make_storage

    if not (home / "optuna.journal").exists():
        return {}
    storage = make_storage(f"journal:///{home / 'optuna.journal'}")
    return {s.study_name: len(optuna.load_study(study_name=s.study_name, storage=storage).trials)
            for s in optuna.get_all_study_summaries(storage)}


@pytest.fixture(scope="module")
def bound(tmp_path_factory):
    """A store holding one finished study: a vanilla ``a/pipeline.toml`` of experiment "bind"."""
    root = tmp_path_factory.mktemp("bound")
    home = root / "mlruns"
    a = _pipeline(root / "a", "vanilla", "bind")
    with store_at(home):
        out = _tune_here(str(a), "--json")
        assert out.returncode == 0, out.stderr[-3000:]
    return home, a, json.loads(out.stdout)


def test_two_pipeline_files_named_alike_stay_apart_and_each_model_holds_one_variant(bound, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    home, a, first = bound
    use_store(monkeypatch, home)
    assert first["study"] == "bind-pipeline", "the default name holds the experiment and the file's name"
    before = {r.info.run_id for r in _runs(home)}
    # another folder's pipeline.toml in the same experiment: the same default name, another pipeline
    b = _pipeline(tmp_path / "b", "vae", "bind")
    line = _one_line(_tune_here(str(b)))
    assert "study 'bind-pipeline'" in line and "tunes another pipeline" in line and 'variant "vanilla" -> "vae"' in line
    assert "--study NEW_NAME" in line
    assert {r.info.run_id for r in _runs(home)} == before and _studies(home)["bind-pipeline"] == 1, (
        "refused before any run"
    )
    # in its own experiment, it is a study of its own
    b2 = _pipeline(tmp_path / "b2", "vae", "bind-vae")
    out = _tune_here(str(b2), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    second = json.loads(out.stdout)
    assert second["study"] == "bind-vae-pipeline" and second["parent_run_id"] != first["parent_run_id"]
    client = MlflowClient()
    for summary, variant in ((first, "vanilla"), (second, "vae")):
        versions = [v for v in client.search_model_versions(max_results=1000) if v.name == summary["study"]]
        assert versions and {client.get_run(v.run_id).data.params["variant"] for v in versions} == {variant}
        assert {v.tags.get("aepipe.study_run_id") for v in versions} <= {summary["parent_run_id"], None}
        parent = client.get_run(summary["parent_run_id"])
        assert parent.data.tags["aepipe.fingerprint"] and parent.info.status == "FINISHED"
        assert [
            a.path for a in client.list_artifacts(parent.info.run_id, "study") if a.path.endswith("fingerprint.json")
        ]
    assert second["best"][0]["run_id"] not in before


@pytest.mark.parametrize("change", ['tune.metric="val_recon"', 'tune.direction="maximize"'])
def test_a_changed_objective_never_joins(bound, monkeypatch, change):
    home, a, _ = bound
    use_store(monkeypatch, home)
    before = len(_runs(home))
    for extra in ((), ("--allow-new-space",)):
        line = _one_line(_tune_here(str(a), "--set", change, *extra))
        assert "study 'bind-pipeline'" in line and "never joins" in line and "--study NEW_NAME" in line, line
        assert (
            "optimises val_loss (minimize); this pipeline asks for val_recon (minimize)" in line
            if "metric" in change
            else "['minimize']; this pipeline asks for ['maximize']" in line
        ), line
    assert len(_runs(home)) == before and _studies(home)["bind-pipeline"] == 1


def test_a_changed_setting_is_refused_naming_it(bound, monkeypatch):
    home, a, _ = bound
    use_store(monkeypatch, home)
    line = _one_line(_tune_here(str(a), "--set", "model.code_dim=6"))
    assert "tunes another pipeline: model.code_dim 4 -> 6" in line
    # how much to run, where and what to log do not make another study
    out = _tune_here(str(a), "--set", "tracking.log_images=true", "--set", 'tune.sampler="tpe"', "--summary", "--json")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name,why", [
    ("", "is empty"),
    ("  lead", "spaces at its start or end"),
    ("trail ", "spaces at its start or end"),
    ("a/b", "'/'"),
    ("two\nlines", "control character"),
    ("x" * 600, "600 characters long"),
    (RUN_ID_LIKE, "looks like a run id"),
    (RUN_ID_LIKE.upper(), "looks like a run id"),
])
def test_bad_study_names_are_refused_before_any_trial(aepipe_store, tmp_path, name, why):
    a = _pipeline(tmp_path / "a", "vanilla", "names")
    line = _one_line(_tune_here(str(a), "--study", name))
    shown = repr(name) if len(name) <= 80 else f"{name[:60]!r}..."
    assert line.startswith(f"Error: --study {shown} ") and why in line, line
    assert _runs(aepipe_store) == [] and _studies(aepipe_store) == {}


@pytest.mark.parametrize("extra,where", [
    ('study = "a/b"', "[tune] study"),
    ('study = "' + RUN_ID_LIKE + '"', "[tune] study"),
])
def test_bad_names_in_the_pipeline_are_refused_before_any_trial(aepipe_store, tmp_path, extra, where):
    a = _pipeline(tmp_path / "a", "vanilla", "names", extra=extra)
    line = _one_line(_tune_here(str(a)))
    assert "study name" in line, line
    assert _runs(aepipe_store) == [] and _studies(aepipe_store) == {}
    run_id_experiment = _pipeline(tmp_path / "b", "vanilla", RUN_ID_LIKE)
    line = _one_line(_tune_here(str(run_id_experiment)))
    assert "experiment" in line and "looks like a run id" in line, line
    assert _runs(aepipe_store) == [] and _studies(aepipe_store) == {}


def test_a_registered_model_holds_one_study(bound, monkeypatch, tmp_path):
    """A study whose registered model already holds another study's run is refused before its
    first trial, and leaves no run behind."""
    from aepipe.tracking import default_tracker

    home, a, first = bound
    use_store(monkeypatch, home)
    default_tracker().register_model("taken", first["best"][0]["run_id"])
    before = {r.info.run_id for r in _runs(home)}
    line = _one_line(_tune_here(str(a), "--study", "taken"))
    assert "registered model 'taken' holds a version of run" in line and "not a trial of study 'taken'" in line, line
    assert {r.info.run_id for r in _runs(home)} == before and _studies(home).get("taken", 0) == 0


def test_a_failure_while_registering_leaves_nothing_running(bound, monkeypatch):
    from mlflow import MlflowClient

    from aepipe.errors import StoreError
    from aepipe.tracking.mlflow_tracker import MlflowTracker

    home, a, _ = bound
    use_store(monkeypatch, home)

    def refuse(self, name, run_id, tags=None):
        raise StoreError("the tracking store refused a write: registry down")

    monkeypatch.setattr(MlflowTracker, "register_model", refuse)
    # no model files to log (the registration is what fails): a cheaper trial
    line = _one_line(_tune_here(str(a), "--study", "regfail", "--set", "tracking.log_model=false"), progress=True)
    assert "registry down" in line
    runs = _runs(home)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    parent = next(
        r for r in runs if r.data.tags.get("aepipe.study") == "regfail" and r.data.tags.get("aepipe.role") == "study"
    )
    assert parent.info.status == "FAILED" and "registry down" in parent.data.tags["aepipe.error"]
    assert not [v for v in MlflowClient().search_model_versions(max_results=1000) if v.name == "regfail"]


def test_a_study_from_before_fingerprints_takes_one_with_a_note(bound, monkeypatch, tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution

    from aepipe.tune import FINGERPRINT_ATTR, make_storage
    from aepipe.usecases.tune import open_pipeline_study

    home, a, _ = bound
    use_store(monkeypatch, home)
    storage = make_storage(f"journal:///{home / 'optuna.journal'}")
    old = optuna.create_study(study_name="older", storage=storage)
    old.add_trial(
        optuna.trial.create_trial(
            params={"train.lr": 3e-3}, distributions={"train.lr": FloatDistribution(1e-3, 1e-2, log=True)}, value=40.0
        )
    )
    st = open_pipeline_study(a, study_name="older")
    assert [what for what, _ in st.binding_notes] == ["recorded on reopen"]
    assert optuna.load_study(study_name="older", storage=storage).user_attrs[FINGERPRINT_ATTR] == st.fingerprint
    with pytest.raises(Exception, match="never joins"):
        open_pipeline_study(a, ("tune.metric=\"val_recon\"",), study_name="older")
    # a study named by the old default (the file's name) is pointed to when the new default is new
    optuna.create_study(study_name="pipeline", storage=storage)
    hinted = open_pipeline_study(_pipeline(tmp_path / "h", "vanilla", "hint"))
    assert hinted.name == "hint-pipeline" and "--study pipeline goes on with it" in " ".join(hinted.hints)


def test_a_changed_space_goes_on_only_when_allowed_and_is_recorded(bound, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    home, a, first = bound
    use_store(monkeypatch, home)
    wider = _pipeline(tmp_path / "wide" / "x", "vanilla", "bind",
                      space='"train.lr" = { type = "float", low = 1e-4, high = 1e-2, log = true }')
    wider = wider.rename(wider.parent.parent / "pipeline.toml")
    line = _one_line(_tune_here(str(wider)))
    assert "searched another space: train.lr" in line and "--allow-new-space" in line, line
    out = _tune_here(str(wider), "--allow-new-space", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    parent = MlflowClient().get_run(first["parent_run_id"])
    assert (
        parent.data.tags["aepipe.binding"] == "space changed" and "train.lr" in parent.data.tags["aepipe.binding.note"]
    )
    assert parent.info.status == "FINISHED"
    again = _tune_here(str(wider), "--summary", "--json")  # the new space is the study's now
    assert again.returncode == 0, again.stderr


def test_the_summary_puts_each_value_under_its_own_parameter(capsys):
    """Trials of a space with component choices hold different parameters: the table's columns
    are their union, blank where a trial lacks one (the first trial's keys used to head them all)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from aepipe.cli.runs import _print_study
    from aepipe.tune import summary_rows

    study = optuna.create_study()
    choice = CategoricalDistribution(["sample", "mean"])
    gamma = FloatDistribution(0.1, 100.0, log=True)
    study.add_trial(optuna.trial.create_trial(params={"model.bottleneck.inference": "mean"},
                                              distributions={"model.bottleneck.inference": choice}, value=1.0))
    study.add_trial(optuna.trial.create_trial(params={"model.bottleneck.gamma_disc": 42.5},
                                              distributions={"model.bottleneck.gamma_disc": gamma}, value=2.0))
    rows = summary_rows(study, ["val_loss"])
    _print_study({"study": "mixed", "states": {"COMPLETE": 2}, "best": rows}, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "┃" in line)
    heads = [h.strip() for h in header.strip().strip("┃").split("┃")]
    cells = [[c.strip() for c in line.strip().strip("│").split("│")] for line in lines if line.count("│") > 2]
    table = [dict(zip(heads, row)) for row in cells]
    assert {"model.bottleneck.inference", "model.bottleneck.gamma_disc"} <= set(heads)
    assert table[0]["model.bottleneck.inference"] == "mean" and table[0]["model.bottleneck.gamma_disc"] == ""
    assert table[1]["model.bottleneck.gamma_disc"] == "42.5" and table[1]["model.bottleneck.inference"] == ""
    assert table[1]["val_loss"] == "2"


def test_the_plugin_template_names_its_study(tmp_path):
    """Every plugin's file is pipeline.toml: the template names its study after the plugin."""
    import tomllib

    from click.testing import CliRunner

    from aepipe.cli import cli
    from aepipe.config import TuneSettings

    result = CliRunner().invoke(cli, ["new-plugin", "aepipe-demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    tune = tomllib.loads((tmp_path / "aepipe-demo" / "aepipe_demo" / "pipeline.toml").read_text())["tune"]
    assert tune["study"] == "demo" and TuneSettings.model_validate(tune).study == "demo"
