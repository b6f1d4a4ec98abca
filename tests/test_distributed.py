"""One model on several processes (issue 14, item 4): `aepipe train --nproc 2` on gloo (CPU) is
one MLflow run, FINISHED, tagged with the world size, whose test loss matches one process with
the same global batch, seed and epochs, and which resumes on 2 processes; Ctrl-C leaves it KILLED, a killed
process FAILED, never
RUNNING."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import PIPELINES, cli_sets, QUIET as QUIET_ALL

CLI = [sys.executable, "-m", "aepipe.cli"]
QUIET = cli_sets(QUIET_ALL)


def _env(home) -> dict[str, str]:
    env = {**os.environ, "AEPIPE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _client(home):
    """A client of the store, opened under aepipe's store lock: read while rank 0 may still be
    creating the store, it would otherwise race MLflow's schema migration."""
    import fcntl

    import mlflow

    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".store.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
            client.search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def _runs(home, experiment: str):
    client = _client(home)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


@pytest.mark.slow
def test_two_processes_train_one_run_that_matches_one_process(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from aepipe import tracking
    from aepipe.cli import cli

    home = tmp_path / "mlruns"
    args = ["train", str(PIPELINES / "vanilla.toml"), "--json", "-q", "--set", "train.epochs=10", *QUIET]
    two = subprocess.run([*CLI, *args, "--nproc", "2", "--set", "tracking.experiment='ddp'"],
                         capture_output=True, text=True, env=_env(home), timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    # the one-process reference needs no process of its own: it trains in this one
    monkeypatch.setenv("AEPIPE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.store.forget()
    one = CliRunner().invoke(cli, [*args, "--set", "tracking.experiment='single'"])
    assert one.exit_code == 0, one.output[-3000:]
    runs = _runs(home, "ddp")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 1 tracked nothing
    assert runs[0].data.tags["aepipe.world_size"] == "2"
    summary = json.loads(two.stdout)  # printed once, by rank 0
    assert summary["run_id"] == runs[0].info.run_id
    loss2, loss1 = summary["metrics"]["test_loss"], json.loads(one.stdout)["metrics"]["test_loss"]
    assert abs(loss2 - loss1) <= 0.05 * loss1, (loss1, loss2)
    assert [m.step for m in _client(home).get_metric_history(runs[0].info.run_id, "val_loss")] == list(range(1, 11))
    # the run goes on for 2 more epochs on 2 processes: every one reads the checkpoint, rank 0 tracks
    more = subprocess.run([*CLI, "train", "--resume", summary["run_id"], "--set", "train.epochs=12", "--nproc", "2",
                           "--json", "-q"],
                          capture_output=True, text=True, env=_env(home), timeout=300)
    assert more.returncode == 0, more.stderr[-3000:]
    assert json.loads(more.stdout)["epochs"] == 12 and len(_runs(home, "ddp")) == 1
    assert [m.step for m in _client(home).get_metric_history(runs[0].info.run_id, "val_loss")] == list(range(1, 13))
    assert _client(home).get_run(runs[0].info.run_id).info.status == "FINISHED"


def _start(home, experiment: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "train", str(PIPELINES / "vanilla.toml"), "--nproc", "2", "-q", "--set",
                             "train.epochs=100000",
                             "--set", "train.patience=0", "--set", f"tracking.experiment='{experiment}'", *QUIET],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(home),
                            start_new_session=True)


def _training_ranks(proc: subprocess.Popen, home, experiment: str, timeout: float = 120) -> list[int]:
    """The pids of the two training processes, once the run has logged an epoch."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        runs = _runs(home, experiment) if (home / "mlflow.db").exists() else []
        if runs and _client(home).get_metric_history(runs[0].info.run_id, "val_loss"):
            ranks = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)
                     if "aepipe.cli" in p.cmdline() and "aepipe.training.launch" not in p.cmdline()]
            if len(ranks) == 2:
                return ranks
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"two ranks never trained: {proc.communicate()[1][-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill-a-rank"])
def test_a_stopped_or_killed_process_never_leaves_the_run_running(tmp_path, how):
    home = tmp_path / "mlruns"
    proc = _start(home, how)
    try:
        ranks = _training_ranks(proc, home, how)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # the terminal signals every process of the command
        else:
            os.kill(max(ranks), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:  # never leave a 100,000-epoch training behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run,) = _runs(home, how)
    if how == "ctrl-c":
        assert proc.returncode == 130, err[-3000:]
        assert run.info.status == "KILLED" and run.data.tags["aepipe.error"].startswith("stopped by SIGINT at epoch")
        lines = [line for line in err.splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1 and f"continue with: aepipe train --resume {run.info.run_id}" in lines[0], err[-3000:]
    else:
        assert proc.returncode == 1, err[-3000:]
        assert run.info.status == "FAILED"
        assert (
            f"the training process of rank 1 (pid {max(ranks)}) exited with -9 (SIGKILL); the others were stopped"
            in err
        ), err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    for pid in ranks:  # every process is gone with the command
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_nproc_is_refused_inside_a_launcher(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from aepipe.cli import cli

    monkeypatch.setenv("AEPIPE_HOME", str(tmp_path / "mlruns"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(cli, ["train", str(PIPELINES / "vanilla.toml"), "--nproc", "2"])
    assert result.exit_code == 2 and "--nproc: this process was already started by a launcher" in result.stderr


RANK_SCRIPT = """
import hashlib, json, os, sys
import torch
from aepipe.config import resolve
from aepipe.plugins import get_plugin_manager
from aepipe.tracking.memory import MemoryTracker
from aepipe.training import train
pm = get_plugin_manager()
pipeline = resolve(pm, sys.argv[1], ["train.epochs=2", "train.patience=0", "tracking.log_images=false",
                                     "tracking.log_model=false", "tracking.log_dataset=false",
                                     "data.in_memory=" + sys.argv[3]])
rank = os.environ["RANK"]
result = train(pipeline, pm, tracker=MemoryTracker(os.path.join(sys.argv[2], rank)))
weights = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes()
                                  for t in result.model.state_dict().values())).hexdigest()
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
    json.dump({"weights": weights, "test_loss": result.metrics["test_loss"]}, f)
"""


BATCH_NORM_RESNET = """variant = "resnet"
[model.encoder]
widths = [8, 16]
norm = "batch"
[model.decoder]
widths = [8, 16]
norm = "batch"
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "pipeline,in_memory", [("aae.toml", "true"), ("contractive.toml", "false"), ("resnet-batch-norm", "true")]
)
def test_every_process_ends_with_the_same_model(tmp_path, pipeline, in_memory):
    """Through DistributedDataParallel the gradients are averaged, so the two processes' models
    stay identical, bit for bit: with a regularizer that takes its own optimizer steps (the
    adversarial discriminator, and the encoder as its generator: their gradients are averaged
    before each), with a penalty that differentiates the encoder inside the step (the
    contractive Jacobian), held or streamed, and with batch norm (its running statistics,
    updated from each shard, are averaged after every epoch)."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    path = PIPELINES / pipeline
    if pipeline == "resnet-batch-norm":
        path = tmp_path / "resnet.toml"
        path.write_text(BATCH_NORM_RESNET)
    proc = subprocess.run([sys.executable, "-m", "aepipe.training.launch", "--standalone", "--nproc-per-node=2",
                           str(script), str(path), str(tmp_path), in_memory],
                          capture_output=True, text=True, env={**_env(tmp_path / "mlruns"), "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["test_loss"] == ranks[1]["test_loss"]
