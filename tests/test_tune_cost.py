"""What a study's trials pay for (issue 22): each trial its parameters and metrics; figures, model
files and the dataset profile for the best trials, when the study ends (``[tune] log_models``); the
dataset read once per worker. The best trials keep everything a single run shows in the MLflow UI."""

from __future__ import annotations

import pytest

from conftest import PIPELINES

OVERRIDES = ("train.epochs=2", "tune.sampler=\"random\"", "tune.pruner=\"none\"")


def _artifacts(client, run_id: str) -> set[str]:
    """The run's files, and ``pyfunc`` where it logged the pyfunc model (an MLflow 3 logged model)."""
    import mlflow

    run = client.get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    return ({a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "images")}
            | {m.name for m in models})


def _study(tmp_path, monkeypatch, log_models: str, n_trials: int = 4):
    import aepipe
    from aepipe.training import loop
    from conftest import use_store

    use_store(monkeypatch, tmp_path / "mlruns")
    loads = []
    real = loop.load_data
    monkeypatch.setattr(loop, "load_data", lambda p, device: loads.append(p.dataset.name) or real(p, device))
    st = aepipe.run_study(PIPELINES / "vanilla.toml", overrides=(*OVERRIDES, f'tune.log_models="{log_models}"'),
                          study_name=f"cost-{log_models}", n_trials=n_trials, echo=lambda line: None)
    return st, loads


def test_only_the_best_trial_logs_figures_model_and_dataset_when_the_study_ends(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    import aepipe
    from aepipe.training.metrics import evaluate_tensors
    from aepipe.tune import finish

    st, loads = _study(tmp_path, monkeypatch, "best")
    assert loads == ["digits"], "the dataset is read once for every trial of the worker, and for the best's files"
    client = MlflowClient()
    trials = sorted(st.study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    assert len(trials) == 4
    best = st.study.best_trial.number
    for t in trials:
        run_id = t.user_attrs["aepipe.mlflow_run_id"]
        run = client.get_run(run_id)
        files = _artifacts(client, run_id)
        assert "pipeline.toml" in files and run.data.params["variant"] == "vanilla"  # every trial: its settings
        assert {"loss", "val_loss", "test_loss", "train_seconds"} <= set(run.data.metrics)  # and its metrics
        assert "checkpoint" in files and run.info.status == "FINISHED"
        if t.number == best:
            assert {"aepipe-model", "pyfunc", "images/reconstructions.png", "images/loss_curves.png",
                    "images/latent.png", "images/samples.png"} <= files, (t.number, files)
            assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["digits"]
        else:
            assert not {"aepipe-model", "pyfunc"} & files and "images/reconstructions.png" not in files, (
                t.number,
                files,
            )
            assert run.inputs.dataset_inputs == []
    best_run = st.study.best_trial.user_attrs["aepipe.mlflow_run_id"]
    # the model logged at the end is the one the trial evaluated: its test loss again
    model = aepipe.load_model(best_run)
    data = st.data_cache[next(iter(st.data_cache))]
    again = float(evaluate_tensors(model, data.test.x.cpu())["loss"])
    assert again == pytest.approx(client.get_run(best_run).data.metrics["test_loss"], rel=1e-4)
    assert client.get_registered_model(st.name).latest_versions[0].run_id == best_run
    # the results recorded again (the same command run on a finished study): logged once
    finish(st, echo=lambda line: None)
    models = mlflow.search_logged_models(
        experiment_ids=[st.experiment_id], filter_string=f"source_run_id = '{best_run}'", output_format="list"
    )
    assert len(models) == 1
    # a best trial whose files cannot be rebuilt (say its checkpoint is gone): told in one line and
    # tagged on the study's run, whose results are recorded all the same; nothing is registered
    from aepipe.errors import ConfigError
    from aepipe.training import loop

    client.delete_tag(best_run, "aepipe.artifacts")
    monkeypatch.setattr(
        loop.Trainer, "log_artifacts", lambda self, run_id: (_ for _ in ()).throw(ConfigError("no checkpoint"))
    )
    told = []
    finish(st, echo=told.append)
    assert told == [f"warning: trial {best} (run {best_run}): its figures and model could not be logged: no checkpoint"]
    parent = client.get_run(st.parent_run_id)
    assert parent.data.tags["aepipe.artifacts_error"].endswith("no checkpoint") and parent.info.status == "FINISHED"
    assert len(client.search_model_versions(f"name = '{st.name}'")) == 1
    # nor does an error aepipe did not foresee (a third-party component's weights that do not load)
    monkeypatch.setattr(
        loop.Trainer, "log_artifacts", lambda self, run_id: (_ for _ in ()).throw(RuntimeError("size\nmismatch"))
    )
    told.clear()
    finish(st, echo=told.append)
    assert told == [f"warning: trial {best} (run {best_run}): its figures and model could not be logged: RuntimeError: "
                    "size mismatch"]


def test_an_ended_run_written_to_keeps_its_status_and_end_time(tmp_path, monkeypatch):
    """A model logged to a finished run (a study's best trial, at the study's end) goes through
    MLflow's fluent API, which marks the run RUNNING: it is put back as it was."""
    from mlflow import MlflowClient

    from aepipe.tracking import default_tracker
    from conftest import use_store

    use_store(monkeypatch, tmp_path / "mlruns")
    tracker = default_tracker()
    run = tracker.start("ended", "r")
    run.finish("FINISHED")
    before = MlflowClient().get_run(run.run_id).info
    folder = tmp_path / "aepipe-model"
    folder.mkdir()
    (folder / "weights.txt").write_text("w")
    seen = []
    again = tracker.open(run.run_id)
    again.log_model(folder, lambda path: seen.append(MlflowClient().get_run(run.run_id).info.status))
    again.close()
    after = MlflowClient().get_run(run.run_id).info
    assert seen == ["RUNNING"]  # the fluent API did take it over
    assert (after.status, after.end_time) == (before.status, before.end_time)
    assert "aepipe-model" in {a.path for a in MlflowClient().list_artifacts(run.run_id)}


def test_log_models_all_keeps_every_trials_files(tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    st, _ = _study(tmp_path, monkeypatch, "all", n_trials=2)
    client = MlflowClient()
    for t in st.study.get_trials(states=(TrialState.COMPLETE,)):
        files = _artifacts(client, t.user_attrs["aepipe.mlflow_run_id"])
        assert {"aepipe-model", "pyfunc", "images/reconstructions.png"} <= files


def test_a_bad_log_models_is_one_line(aepipe_pm, tmp_path):
    from aepipe.config import resolve
    from aepipe.errors import ConfigError

    with pytest.raises(ConfigError, match="log_models"):
        resolve(aepipe_pm, PIPELINES / "vanilla.toml", ['tune.log_models="some"'])
