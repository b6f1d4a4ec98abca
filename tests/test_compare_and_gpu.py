"""aepipe compare and zoo (read from MLflow, no retraining), and the device/AMP settings."""

from __future__ import annotations

import csv
import io

import pytest
import torch
from click.testing import CliRunner

from aepipe.cli import cli
from aepipe.config import resolve
from aepipe.errors import ConfigError
from aepipe.training import autocast, prepare_for_device, train

from conftest import PIPELINES, QUIET

#: the models here train on one CPU thread (zoo_shared.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_compare_reads_runs_back(aepipe_pm, aepipe_store):
    a = train(resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, "train.epochs=2"]), aepipe_pm)
    b = train(
        resolve(aepipe_pm, PIPELINES / "vae.toml", [*QUIET, "train.epochs=2", "model.regularizers.kl.iw_samples=5"]),
        aepipe_pm,
    )
    runner = CliRunner()
    out = runner.invoke(cli, ["compare", "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(out.stdout))}
    assert set(rows) == {a.run_id, b.run_id}
    assert rows[a.run_id]["variant"] == "vanilla" and rows[a.run_id]["dataset"] == "digits"
    assert float(rows[a.run_id]["test_mse"]) == pytest.approx(a.metrics["test_mse"])
    assert rows[a.run_id]["test_neg_elbo"] == "" and float(rows[b.run_id]["test_neg_elbo"]) == pytest.approx(
        b.metrics["test_neg_elbo"]
    )
    assert float(rows[b.run_id]["test_iw_nll"]) == pytest.approx(b.metrics["test_iw_nll"])
    md = runner.invoke(cli, ["compare", a.run_id, "--format", "markdown"])
    assert md.exit_code == 0 and md.stdout.startswith("| variant | dataset | test_mse")
    assert a.run_id in md.stdout and b.run_id not in md.stdout
    text = runner.invoke(cli, ["compare", "--experiment", "vae"])
    assert text.exit_code == 0 and b.run_id in text.stdout and a.run_id not in text.stdout
    missing = runner.invoke(cli, ["compare", "f" * 32])
    assert missing.exit_code == 2 and "not found" in missing.stderr


@pytest.mark.slow
def test_zoo_trains_every_variant_on_the_same_budget(aepipe_pm, aepipe_store):
    out = CliRunner().invoke(cli, ["zoo", "--epochs", "1", "--set", "tracking.log_images=false", "--set",
                                   "tracking.log_dataset=false", "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    variants = {r["variant"] for r in rows}
    registered = set(aepipe_pm.registry.names("variant"))
    skipped = {line.split(":")[0] for line in out.stderr.splitlines() if ": skipped:" in line}
    assert variants | skipped == registered and len(variants) >= len(registered) - 1
    assert all(float(r["epochs"]) == 1 and r["dataset"] == "digits" for r in rows)


def test_autocast_is_bf16_on_cuda_only():
    import contextlib

    assert isinstance(autocast(torch.device("cpu"), "bf16"), contextlib.nullcontext)
    assert isinstance(autocast(torch.device("cuda"), "off"), contextlib.nullcontext)
    ctx = autocast(torch.device("cuda"), "bf16")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16


def test_bf16_losses_stay_float32_under_autocast(aepipe_pm):
    """What autocast does on a GPU, checked with CPU autocast: matrix products run in bf16,
    the likelihood and the loss in float32."""
    from aepipe.model import build_model
    from aepipe.training import load_data

    pipeline = resolve(aepipe_pm, PIPELINES / "vae.toml")
    data = load_data(pipeline, torch.device("cpu"))
    model = build_model(pipeline, data)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, terms, step = model.step(data.x_train[:32])
    assert step.output.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and terms["recon"].dtype == torch.float32 and torch.isfinite(loss)


def test_cudnn_benchmark_only_for_convolutions_on_cuda(aepipe_pm, monkeypatch):
    from aepipe.model import build_model
    from aepipe.training import load_data

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    pipeline = resolve(aepipe_pm, tree={"variant": "conv"})
    model = build_model(pipeline, load_data(pipeline, torch.device("cpu")))
    prepare_for_device(model, torch.device("cpu"), compile_model=False)
    assert torch.backends.cudnn.benchmark is False
    prepare_for_device(model, torch.device("cuda"), compile_model=False)  # nothing moves: only the flag
    assert torch.backends.cudnn.benchmark is True


def test_amp_setting_trains_on_cpu_and_system_metrics_need_psutil(aepipe_pm, aepipe_store, monkeypatch):
    result = train(
        resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, "train.epochs=1", "train.amp=bf16"]), aepipe_pm
    )
    assert result.status == "FINISHED"
    import builtins

    real_import = builtins.__import__

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError("no psutil")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    with pytest.raises(ConfigError, match=r"tracking.system_metrics = true needs psutil: pip install 'aepipe\[gpu\]'"):
        train(
            resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, "train.epochs=1", "tracking.system_metrics=true"]),
            aepipe_pm,
        )


def test_system_metrics_are_sampled_at_the_set_interval(aepipe_pm, aepipe_store, monkeypatch):
    pytest.importorskip("psutil")
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "30")  # the setting overrides it (restored after)
    result = train(resolve(aepipe_pm, PIPELINES / "vanilla.toml",
                           [*QUIET, "train.epochs=100", "tracking.system_metrics=true",
                            "tracking.system_metrics_interval=0.1"]),
                   aepipe_pm)
    assert result.seconds > 0.5, "the run must outlast several sampling intervals"
    client = MlflowClient()
    names = set(client.get_run(result.run_id).data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= names
    assert len(client.get_metric_history(result.run_id, "system/cpu_utilization_percentage")) >= 3


@pytest.mark.slow
def test_compiled_model_trains_and_its_logged_model_loads(aepipe_pm, aepipe_store):
    import mlflow.pytorch

    sets = ["train.epochs=1", "train.compile=true", "tracking.pytorch_flavor=true", "tracking.log_images=false",
            "tracking.log_dataset=false"]
    pipeline = resolve(aepipe_pm, PIPELINES / "vanilla.toml", sets)
    result = train(pipeline, aepipe_pm)
    assert result.status == "FINISHED" and torch.isfinite(torch.tensor(result.metrics["test_loss"]))
    model = mlflow.pytorch.load_model(f"runs:/{result.run_id}/model")
    with torch.no_grad():
        assert model.encode(result.data.x_test[:3]).code.shape == (3, 32)
