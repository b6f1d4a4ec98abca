"""What a study's trials pay for (issue 22): each trial its parameters and metrics; figures, model
files and the dataset profile for the trials that matter (``[tune] log_models``); the dataset read
once per worker. The best trials keep everything a single run shows in the MLflow UI."""

from __future__ import annotations

import pytest

from conftest import PIPELINES

OVERRIDES = ("train.epochs=2", "tune.sampler=\"random\"", "tune.pruner=\"none\"")


def _artifacts(client, run_id: str) -> set[str]:
    """The run's files, and ``pyfunc`` where it logged the pyfunc model (an MLflow 3 logged model)."""
    import mlflow

    run = client.get_run(run_id)
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                         output_format="list")
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


def test_only_the_best_trials_log_figures_model_and_dataset(tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    st, loads = _study(tmp_path, monkeypatch, "best")
    assert loads == ["digits"], "the dataset is read once for every trial of the worker"
    client = MlflowClient()
    trials = sorted(st.study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    assert len(trials) == 4
    best_so_far, kept = float("inf"), []
    for t in trials:  # the trials that were the best when they ended, and only those, kept their files
        if t.value < best_so_far:
            best_so_far = t.value
            kept.append(t.number)
    for t in trials:
        run_id = t.user_attrs["aepipe.mlflow_run_id"]
        run = client.get_run(run_id)
        files = _artifacts(client, run_id)
        assert "pipeline.toml" in files and run.data.params["variant"] == "vanilla"  # every trial: its settings
        assert {"loss", "val_loss", "test_loss", "train_seconds"} <= set(run.data.metrics)  # and its metrics
        if t.number in kept:
            assert {"aepipe-model", "pyfunc", "images/reconstructions.png", "images/loss_curves.png"} <= files, (t.number, files)
            assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["digits"]
        else:
            assert not {"aepipe-model", "pyfunc"} & files and "images/reconstructions.png" not in files, (t.number, files)
            assert run.inputs.dataset_inputs == []
    assert st.study.best_trial.number in kept  # the study's best trial keeps everything
    assert len(kept) < len(trials) or trials[0].value > trials[-1].value  # some trial was spared (unless each beat the last)


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


class _Trial:
    def __init__(self, values):
        self.values = values


class _Study:
    def __init__(self, *values):
        self.trials = [_Trial(list(v)) for v in values]

    def get_trials(self, deepcopy=False, states=()):
        return self.trials


def test_best_so_far_for_one_objective_and_the_pareto_front():
    from aepipe.tune.worker import is_best

    assert is_best(_Study(), [1.0], ["minimize"])  # the first trial
    assert is_best(_Study([2.0], [1.5]), [1.0], ["minimize"])
    assert not is_best(_Study([2.0], [0.5]), [1.0], ["minimize"])
    assert not is_best(_Study([1.0]), [1.0], ["minimize"])  # a tie: the earlier trial keeps its place
    assert is_best(_Study([0.5]), [1.0], ["maximize"])
    two = ["minimize", "maximize"]
    assert is_best(_Study([1.0, 1.0]), [2.0, 2.0], two)  # worse on one, better on the other: on the front
    assert not is_best(_Study([1.0, 3.0]), [2.0, 2.0], two)  # dominated
    assert is_best(_Study([2.0, 2.0]), [2.0, 2.0], two)  # equal is not dominated
