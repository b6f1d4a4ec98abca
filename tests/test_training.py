"""Training runs end to end: MLflow contents, the CLI, checkpoints, resume, Ctrl-C, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from aepipe import hookimpl
from aepipe.config import resolve
from aepipe.errors import ConfigError, TrainingError
from aepipe.training import Interrupted, select_device, train

from conftest import PIPELINES, QUIET
from helpers import sigint_at_epoch_end


def client():
    from aepipe import tracking

    tracking.setup()
    from mlflow import MlflowClient

    return MlflowClient()


def artifact_paths(c, run_id, path=""):
    out = []
    for item in c.list_artifacts(run_id, path):
        out += artifact_paths(c, run_id, item.path) if item.is_dir else [item.path]
    return out


def test_cli_train_records_everything_in_mlflow(store, tmp_path):
    env = {**os.environ, "AEPIPE_HOME": str(store)}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run(
        [sys.executable, "-m", "aepipe.cli", "train", str(PIPELINES / "vanilla.toml"), "--set", "train.epochs=15",
         "--set", "tracking.pytorch_flavor=true", "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    run_id = summary["run_id"]
    assert summary["status"] == "FINISHED" and summary["epochs"] == 15
    assert {"test_loss", "test_recon", "test_mse"} <= set(summary["metrics"])
    assert "epoch 15/15" in out.stderr  # plain progress lines when not on a terminal
    # and nothing else: no library warnings (MLflow's pyfunc type-hint notice, for one)
    noise = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith(("epoch ", "finished "))]
    assert not noise, noise

    c = client()
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["variant"] == "vanilla" and params["model.encoder.name"] == "one-layer"
    assert params["model.code_dim"] == "32" and params["train.epochs"] == "15"
    tags = run.data.tags
    assert tags["aepipe.variant"] == "vanilla" and tags["aepipe.version"] == "0.1.0"
    assert tags["aepipe.plugin.aepipe"] == "0.1.0" and tags["aepipe.device"] == "cpu"
    for key in ("loss", "recon", "val_loss", "val_mse"):
        history = c.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == list(range(1, 16)), key
    assert run.data.metrics["test_mse"] == pytest.approx(summary["metrics"]["test_mse"])
    files = artifact_paths(c, run_id)
    for expected in ("pipeline.toml", "images/reconstructions.png", "images/loss_curves.png",
                     "checkpoint/checkpoint.pt",
                     "aepipe-model/weights.pt", "aepipe-model/pipeline.toml", "aepipe-model/meta.json"):
        assert expected in files, files
    assert not (store / "checkpoints" / run_id).exists(), "once logged, the checkpoint is not kept twice"
    assert run.outputs.model_outputs, "the model is logged as an MLflow LoggedModel of this run"
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == "digits"
    # the resolved pipeline logged is a complete, loadable pipeline
    text = c.download_artifacts(run_id, "pipeline.toml", str(tmp_path))
    from aepipe.plugins import get_plugin_manager

    again = resolve(get_plugin_manager(), text)
    assert again.flat()["model.code_dim"] == 32

    # the model loads with a plain mlflow client (the PyTorch flavour, asked for) and reconstructs
    import mlflow.pytorch
    from sklearn.datasets import load_digits

    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    raw = load_digits().data[:50]
    x = torch.as_tensor(raw / 16.0, dtype=torch.float32)
    with torch.no_grad():
        recon = model(x)
    assert recon.shape == x.shape
    baseline = float(((x - x.mean(0)) ** 2).mean())  # predicting the mean image
    assert float(((recon - x) ** 2).mean()) < 0.7 * baseline
    assert model.meta["value_range"] == [0.0, 16.0]

    # aepipe encode / reconstruct take raw dataset units
    np.save(tmp_path / "in.npy", raw)
    from click.testing import CliRunner

    from aepipe.cli import cli

    runner = CliRunner()
    r1 = runner.invoke(cli, ["encode", run_id, str(tmp_path / "in.npy"), "-o", str(tmp_path / "codes.npy")])
    r2 = runner.invoke(cli, ["reconstruct", run_id, str(tmp_path / "in.npy"), "-o", str(tmp_path / "rec.npy")])
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    codes = np.load(tmp_path / "codes.npy")
    with torch.no_grad():
        expected = model.encode(x).code.numpy()
    assert codes.shape == (50, 32) and np.allclose(codes, expected, atol=1e-5)
    rec = np.load(tmp_path / "rec.npy")
    assert rec.shape == raw.shape and np.allclose(rec, recon.numpy() * 16.0, atol=1e-4)
    # wrong width is a one-line error
    np.save(tmp_path / "wide.npy", np.zeros((3, 65)))
    r3 = runner.invoke(cli, ["encode", run_id, str(tmp_path / "wide.npy"), "-o", str(tmp_path / "x.npy")])
    assert r3.exit_code == 2 and "rows of 65 values; run" in r3.stderr and "expects 64" in r3.stderr
    r4 = runner.invoke(cli, ["encode", "0" * 32, str(tmp_path / "in.npy"), "-o", str(tmp_path / "x.npy")])
    assert r4.exit_code == 2 and f"run '{'0' * 32}' not found" in r4.stderr




def _stopper(at_epoch: int) -> types.ModuleType:
    plugin = types.ModuleType("stopper")

    def ctrl_c(signum, frame):  # Python's own answer to Ctrl-C, as a handler: a user's, not the plugin's
        raise KeyboardInterrupt

    @hookimpl
    def aepipe_epoch_end(run, epoch, metrics):
        if epoch == at_epoch:  # the user presses Ctrl-C at this epoch's end
            signal.signal(signal.SIGINT, ctrl_c)
            signal.raise_signal(signal.SIGINT)

    plugin.aepipe_epoch_end = aepipe_epoch_end
    return plugin



def test_ctrl_c_marks_run_killed_and_resume_continues_exactly(aepipe_pm, store):
    from aepipe.plugins import get_plugin_manager

    overrides = [*QUIET, "train.epochs=4", "train.patience=0"]
    full = train(resolve(aepipe_pm, PIPELINES / "vanilla.toml", overrides), aepipe_pm)

    pm = get_plugin_manager()
    pm.register_plugin(sigint_at_epoch_end(2), name="sigint")
    pipeline = resolve(pm, PIPELINES / "vanilla.toml", overrides)
    with pytest.raises(
        Interrupted,
        match=r"stopped by SIGINT at epoch 3, batch 0 of 20; run (\w+) marked KILLED with a checkpoint "
        r"of where it stood; continue with: aepipe train --resume \1$",
    ) as exc:
        train(pipeline, pm)
    run_id = str(exc.value).split("run ")[1].split()[0]
    c = client()
    assert c.get_run(run_id).info.status == "KILLED"
    assert "stopped by SIGINT" in c.get_run(run_id).data.tags["aepipe.error"]
    assert [m.step for m in c.get_metric_history(run_id, "loss")] == [1, 2]

    resumed = train(None, aepipe_pm, resume=run_id)  # the printed command: the run's own pipeline
    assert resumed.run_id == run_id and resumed.epochs == 4
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and "aepipe.error" not in run.data.tags
    assert sorted(m.step for m in c.get_metric_history(run_id, "loss")) == [1, 2, 3, 4]
    # same seed, same data order: resuming reproduces the uninterrupted run
    assert resumed.metrics["test_loss"] == pytest.approx(full.metrics["test_loss"], rel=1e-6)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)

    # a finished run cannot be resumed without more epochs; with more it trains on
    with pytest.raises(ConfigError, match="already finished"):
        train(resolve(aepipe_pm, PIPELINES / "vanilla.toml", overrides), aepipe_pm, resume=run_id)
    more = train(None, aepipe_pm, resume=run_id, overrides=("train.epochs=5",))
    assert more.epochs == 5
    with pytest.raises(ConfigError, match=r"--set train.epochs=3 is fewer than the 5 epochs the run was started with"):
        train(None, aepipe_pm, resume=run_id, overrides=("train.epochs=3",))
    # a changed pipeline is refused, naming the key
    with pytest.raises(ConfigError, match=r"differs from the run's pipeline at model\.code_dim"):
        train(resolve(aepipe_pm, PIPELINES / "vanilla.toml",
                      [*QUIET, "train.epochs=9", "train.patience=0", "model.code_dim=8"]), aepipe_pm, resume=run_id)


def test_sparser_checkpoints_resume_exactly_without_logging_twice(aepipe_pm, store):
    from aepipe.plugins import get_plugin_manager

    overrides = [*QUIET, "train.epochs=6", "train.patience=0"]
    full = train(resolve(aepipe_pm, PIPELINES / "vanilla.toml", overrides), aepipe_pm)
    sparse = [*overrides, "train.checkpoint_every=3", "train.checkpoint_seconds=0"]
    pm = get_plugin_manager()
    pm.register_plugin(_stopper(5), name="stopper")  # epochs 1-4 logged, the checkpoint is of epoch 3
    with pytest.raises(Interrupted, match=r"interrupted at epoch 5; .* checkpoint of epoch 3 saved") as exc:
        train(resolve(pm, PIPELINES / "vanilla.toml", sparse), pm)
    run_id = str(exc.value).split("run ")[1].split()[0]
    c = client()
    assert [m.step for m in c.get_metric_history(run_id, "loss")] == [1, 2, 3, 4]
    resumed = train(
        resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*sparse, "train.checkpoint_every=2"]), aepipe_pm, resume=run_id
    )
    history = c.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]  # epoch 4 redone, logged once
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [m.value for m in sorted(history, key=lambda m: m.step)]
    )
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    # interrupted before the first checkpoint: said plainly
    with pytest.raises(
        Interrupted,
        match=r"marked KILLED before its first checkpoint \(train.checkpoint_every = 9, checkpoint_seconds = 0\); "
        r"start it again",
    ):
        train(resolve(pm, PIPELINES / "vanilla.toml", [*sparse, "train.checkpoint_every=9"]), pm)


def test_diverging_loss_fails_the_run_naming_the_epoch(aepipe_pm, store):
    pipeline = resolve(
        aepipe_pm, PIPELINES / "linear.toml", [*QUIET, "train.optimizer=sgd", "train.lr=10.0", "train.epochs=5"]
    )
    with pytest.raises(TrainingError, match=r"linear\.toml: training diverged at epoch 1: loss = (nan|inf)") as exc:
        train(pipeline, aepipe_pm)
    assert "\n" not in str(exc.value)
    c = client()
    runs = c.search_runs(
        [c.get_experiment_by_name("linear").experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    assert runs[0].info.status == "FAILED"
    assert "diverged at epoch 1" in runs[0].data.tags["aepipe.error"]


def test_early_stopping_stops_and_keeps_the_best_weights(aepipe_pm, store):
    pipeline = resolve(
        aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, "train.epochs=200", "train.patience=2", "train.min_delta=5.0"]
    )
    result = train(pipeline, aepipe_pm)
    assert result.stopped_early and result.epochs < 20


def test_seeded_runs_are_reproducible_on_cpu(aepipe_pm, store):
    pipeline = resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, "train.epochs=2"])
    a, b = train(pipeline, aepipe_pm), train(pipeline, aepipe_pm)
    assert a.metrics["test_loss"] == b.metrics["test_loss"]
    c = train(resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, "train.epochs=2", "train.seed=1"]), aepipe_pm)
    assert c.metrics["test_loss"] != a.metrics["test_loss"]


def test_a_component_failing_the_first_step_is_named(aepipe_pm, aepipe_plugin, store):
    plugin = types.ModuleType("badenc")

    @hookimpl
    def aepipe_register_encoders(register):
        from aepipe_plugins.networks.basic import MLPEncoder

        class Broken(MLPEncoder):
            name = "broken"

            def forward(self, x, y_onehot=None):
                raise RuntimeError("shapes do not match")

        register(Broken)

    plugin.aepipe_register_encoders = aepipe_register_encoders
    aepipe_plugin(plugin, name="badenc")
    pipeline = resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, "model.encoder.name=broken"])
    with pytest.raises(
        ConfigError, match=r"a first training step failed in encoder 'broken': RuntimeError: shapes do not match"
    ):
        train(pipeline, aepipe_pm)


def test_device_selection(monkeypatch):
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="'gpu' is not a device"):
        select_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="only 2 GPU"):
        select_device("cuda:2")


def test_the_users_tracking_uri_holds_after_setup(store, tmp_path, monkeypatch):
    from aepipe import tracking

    theirs = f"sqlite:///{tmp_path / 'theirs.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", theirs)
    for _ in range(2):  # MLflow exports the URI it is given: the second call must not take it for aepipe's
        assert tracking.setup().get_tracking_uri() == theirs and tracking.tracking_uri() == theirs
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracking.setup()
    assert tracking.tracking_uri() == tracking.default_tracking_uri()
    assert os.environ["MLFLOW_TRACKING_URI"] == tracking.default_tracking_uri()  # exported by MLflow
    assert tracking.setup().get_tracking_uri() == tracking.default_tracking_uri()  # and still ours


def test_ui_over_a_tracking_server_points_there(store, monkeypatch):
    from click.testing import CliRunner

    from aepipe.cli import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    out = CliRunner().invoke(cli, ["ui"])
    assert out.exit_code == 2 and "MLFLOW_TRACKING_URI=http://127.0.0.1:5999 is an MLflow tracking server" in out.stderr
