"""Budgets that converge: training stops when the validation loss stops improving, logs the
epochs it used, resumes correctly after stopping, and the zoo trains every variant that way over
several seeds."""

from __future__ import annotations

import pytest
import torch

from aepipe.config import resolve
from aepipe.errors import ConfigError
from aepipe.training import train

from conftest import PIPELINES, QUIET

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: a plateau by decree: no epoch improves the validation loss by 1000, so every epoch after the first is a bad one
PLATEAU = ["train.min_delta=1000"]


def test_training_stops_before_the_cap_on_a_plateau_and_logs_the_epochs_used(aepipe_pm, aepipe_store):
    from mlflow import MlflowClient

    result = train(
        resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, *PLATEAU, "train.epochs=200", "train.patience=3"]),
        aepipe_pm,
    )
    assert result.stopped_early and result.epochs == 4  # the first epoch, then three without improvement
    logged = MlflowClient().get_run(result.run_id).data.metrics
    assert logged["epochs_trained"] == 4 and logged["stopped_early"] == 1.0 and logged["best_epoch"] == 1
    assert len(MlflowClient().get_metric_history(result.run_id, "val_loss")) == 4
    # patience 0 never stops: the cap is the budget
    full = train(
        resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, *PLATEAU, "train.epochs=5", "train.patience=0"]),
        aepipe_pm,
    )
    assert not full.stopped_early and full.epochs == 5
    assert MlflowClient().get_run(full.run_id).data.metrics["stopped_early"] == 0.0


def test_a_run_that_stopped_early_is_not_trained_further_on_resume(aepipe_pm, aepipe_store):
    result = train(
        resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, *PLATEAU, "train.epochs=50", "train.patience=1"]),
        aepipe_pm,
    )
    assert result.stopped_early and result.epochs == 2
    with pytest.raises(
        ConfigError, match=r"already finished \(2 epochs, stopped early: its val_loss stopped improving\)"
    ):
        train(None, aepipe_pm, resume=result.run_id)


def test_the_zoo_trains_each_variant_until_it_stops_over_seeds(aepipe_pm, aepipe_store):
    from mlflow import MlflowClient

    from aepipe.zoo import run_zoo

    lines: list[str] = []
    result = run_zoo("digits", epochs=50, experiment="zoo-stop", overrides=[*PLATEAU, "tracking.log_images=false",
                                                                             "tracking.log_dataset=false"],
                     variants=["vanilla"], pm=aepipe_pm, echo=lines.append, patience=2, seeds=2)
    runs = [MlflowClient().get_run(r) for r in result.seed_runs["vanilla"]]
    assert len(runs) == 2 and result.runs["vanilla"] == runs[0].info.run_id
    assert [r.data.tags["aepipe.seed"] for r in runs] == ["0", "1"]
    assert runs[0].data.tags["aepipe.group"] == runs[1].data.tags["aepipe.group"]
    assert all(r.data.metrics["epochs_trained"] == 3 and r.data.params["train.patience"] == "2" for r in runs)
    assert all("after 3 epochs (stopped early)" in line for line in lines) and len(lines) == 2
    with pytest.raises(ConfigError, match="--seeds 0"):
        run_zoo("digits", variants=["vanilla"], pm=aepipe_pm, seeds=0)


def test_early_stopping_waits_for_an_annealed_objective_to_settle(aepipe_pm, aepipe_store):
    """The capacity beta-VAE's loss is |KL - C| with C rising over `anneal` epochs: the losses of
    two epochs of the rise measure different objectives, so no epoch counts as worse, and the
    best is the latest, until C stops at c_max; the count starts afresh at the first settled
    epoch. (Before, the zoo stopped this variant after 7 to 12 of 100 epochs on mnist5k.)"""
    from aepipe.training.state import TrainState

    state, weights = TrainState(pipeline=""), {"w": torch.zeros(1)}
    for epoch, (loss, settled) in enumerate([(5.0, False), (6.0, False), (7.0, False), (9.0, True), (8.0, True)], 1):
        weights["w"].fill_(epoch)
        stop = state.record(epoch, {"val_loss": loss}, 0.0, 1, weights, settled)
        assert not stop and state.best_epoch == epoch and state.best_weights["w"].item() == epoch
    assert state.record(6, {"val_loss": 8.5}, 0.0, 1, weights, True) and state.best_epoch == 5
    overrides = [*QUIET, "train.min_delta=1e9", "train.epochs=20", "train.patience=2",
                 "model.regularizers.capacity.unit=\"epochs\"", "model.regularizers.capacity.anneal=4"]
    tree = {"variant": "beta-vae-capacity", "data": {"name": "digits"}}
    run = train(resolve(aepipe_pm, tree=tree, overrides=overrides), aepipe_pm)
    # C reaches c_max at the end of epoch 4, the first settled epoch (the new baseline); 5 and 6 are worse
    assert run.stopped_early and run.epochs == 6
