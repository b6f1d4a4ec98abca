"""Faults: writes that fail half-way, processes killed at any moment, damaged files. Nothing
recorded is lost, no run is left RUNNING, every error is one line naming the file."""

from __future__ import annotations

import errno
import io
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from aepipe.config import resolve
from aepipe.errors import ConfigError, WriteError
from aepipe.tracking.base import LEASE_BEAT, LEASE_OWNER, lease_owner
from aepipe.tracking.memory import MemoryTracker
from aepipe.training import train

from conftest import PIPELINES, QUIET as QUIET_ALL

QUIET = [*QUIET_ALL, "train.patience=0"]
SETS = sum((["--set", q] for q in QUIET), [])


def _cli(*args: str):
    from aepipe.cli import cli

    return CliRunner().invoke(cli, list(args))


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


# --- the atomic write itself ---------------------------------------------------------------------


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    from aepipe import files

    target = tmp_path / "out" / "weights.pt"
    files.write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with files.atomic_write(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["weights.pt"]
    # a full disk, as torch.save meets it (an OSError its file object raised, wrapped in a RuntimeError)
    monkeypatch.setattr(files, "free_space", lambda folder: 12_345)

    def full(obj, f):
        f.write(b"x" * 2000)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError) as exc:
        files.save_tensors(target, {"w": torch.zeros(3)})
    assert str(exc.value) == (
        f"could not write {target}: no space left on the device (12.3 kB free in {target.parent}; "
        "2 kB of it had been written); free some space and run the command again"
    )
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["weights.pt"]


# --- a checkpoint that cannot be written ---------------------------------------------------------


def _checkpoint_fails(monkeypatch, at: int) -> list[int]:
    """Make the ``at``-th checkpoint write fail half-way with ENOSPC (the disk filled)."""
    real = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "format" in obj:
            calls.append(obj["state"]["epoch"])
            if len(calls) == at:
                buffer = io.BytesIO()
                real(obj, buffer)
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return calls


def test_a_checkpoint_that_fails_half_way_ends_the_run_failed_and_leaves_nothing_behind(store, monkeypatch):
    """The disk fills while the second checkpoint (epoch 4) is written: one line naming the file and the
    free space, no temporary file, the run FAILED (not RUNNING) keeping its first checkpoint,
    from which --resume finishes it with every epoch logged once. A damaged checkpoint (empty,
    truncated) is then one line naming it."""
    from mlflow import MlflowClient

    from aepipe.tracking import default_tracker
    from aepipe.training.resume import read_checkpoint

    real_save = torch.save
    calls = _checkpoint_fails(monkeypatch, at=2)
    args = ["train", str(PIPELINES / "vanilla.toml"), "-q", *SETS, "--set", "train.epochs=4", "--set",
            "train.checkpoint_every=2",
            "--set", "train.checkpoint_seconds=0", "--set", 'tracking.experiment="faults-enospc"']
    out = _cli(*args)
    assert out.exit_code == 2 and calls == [2, 4], out.output
    line = _one_line(out.stderr)
    found = re.fullmatch(
        r"Error: could not write (/\S+/checkpoints/([0-9a-f]{32})/checkpoint\.pt): no space left on the device "
        r"\(\S+ (bytes|kB|MB|GB|TB) free in /\S+; \S+ (bytes|kB|MB) of it had been written\); "
        r"free some space and run the command again",
        line,
    )
    assert found, line
    run_id = found.group(2)
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "could not write" in run.data.tags["aepipe.error"]
    assert not _partial_files(store), "the half-written checkpoint is removed"
    state, *_ = read_checkpoint(default_tracker(), run_id)
    assert state.epoch == 2, "the last whole checkpoint is kept"

    monkeypatch.setattr(torch, "save", real_save)  # the disk has room again; the store fixture's patches stay
    out = _cli("train", "--resume", run_id, "-q")
    assert out.exit_code == 0, out.output
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in ("loss", "val_loss"):
        assert _steps(client, run_id, key) == [1, 2, 3, 4], key

    # its stored checkpoint damaged: one line naming it, whatever its size
    artifact = Path(client.download_artifacts(run_id, "checkpoint/checkpoint.pt", str(store.parent / "dl")))
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / "checkpoint" / "checkpoint.pt"
    whole = stored.read_bytes()
    assert whole == artifact.read_bytes()
    for damaged, said in ((b"", r"empty: 0 bytes"), (whole[: len(whole) // 3], r"\S+ kB: \w+")):
        stored.write_bytes(damaged)
        out = _cli("train", "--resume", run_id, "-q", "--set", "train.epochs=6")
        assert out.exit_code == 2, out.output
        assert re.fullmatch(
            rf"Error: --resume {run_id}: its logged artifact checkpoint/checkpoint\.pt is damaged \({said}.*\); "
            r"it cannot be read",
            _one_line(out.stderr),
        ), out.stderr


@pytest.fixture
def small_disk(aepipe_store):
    """The tracking store (its database, artifacts and checkpoints) on a 3 MB tmpfs."""
    aepipe_store.mkdir(parents=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(aepipe_store)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield aepipe_store
    finally:
        subprocess.run(["umount", "-l", str(aepipe_store)], capture_output=True, timeout=30)


def test_a_full_disk_under_the_store_is_one_line_and_the_run_is_ended(small_disk, aepipe_pm, tmp_path):
    """A real full disk: the store on a 3 MB tmpfs with room for one checkpoint and a half. The
    second checkpoint fills it: one line naming the file and the space left, no temporary file,
    and the run is ended FAILED (ending it needs the space the partial file held); its first
    checkpoint, which could not be stored with the run either, stays where --resume reads it."""
    from mlflow import MlflowClient

    from aepipe import files, tracking
    from aepipe.tracking import default_tracker
    from aepipe.training.resume import read_checkpoint

    sets = [*QUIET, "model.code_dim=128", "train.epochs=4", "train.checkpoint_every=1", "train.checkpoint_seconds=0",
            'tracking.experiment="full"']
    probe = MemoryTracker(tmp_path / "probe")
    result = train(resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*sets, "train.epochs=1"]), aepipe_pm, tracker=probe)
    size = (probe.root / result.run_id / "artifacts" / "checkpoint" / "checkpoint.pt").stat().st_size
    tracking.setup()
    filler = small_disk / "filler"
    files.write_bytes(filler, b"\0" * (shutil.disk_usage(small_disk).free - int(1.5 * size)))

    out = _cli("train", str(PIPELINES / "vanilla.toml"), "-q", *sum((["--set", s] for s in sets), []))
    assert out.exit_code == 2, out.output
    line = _one_line(out.stderr)
    found = re.fullmatch(
        r"Error: could not write (\S+/checkpoints/([0-9a-f]{32})/checkpoint\.pt): no space left on the device "
        r"\((\S+) kB free in \S+; \S+ kB of it had been written\); free some space and run the command again",
        line,
    )
    assert found and found.group(1).startswith(str(small_disk)), line
    assert float(found.group(3)) * 1e3 < size, "the free space said is what is left"
    run_id = found.group(2)
    assert not _partial_files(small_disk)
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED", "not left RUNNING"
    reason = run.data.tags["aepipe.error"]
    assert reason.startswith("could not write") and f"its checkpoint stays at {found.group(1)}" in reason
    state, *_ = read_checkpoint(default_tracker(), run_id)
    assert state.epoch == 1
    # space freed, the run continues from there, every epoch logged once
    filler.unlink()
    out = _cli("train", "--resume", run_id, "-q")
    assert out.exit_code == 0, out.output
    client = MlflowClient()
    assert client.get_run(run_id).info.status == "FINISHED"
    assert _steps(client, run_id, "loss") == _steps(client, run_id, "val_loss") == [1, 2, 3, 4]
    assert not _partial_files(small_disk)


# --- damaged model files ---------------------------------------------------------------------------


def test_a_damaged_model_file_is_one_line_naming_it(aepipe_pm, store, tmp_path):
    from mlflow import MlflowClient

    from aepipe.artifacts import DIR
    from aepipe.runs import load_model as load_run_model
    from aepipe.tracking import default_tracker

    memory = MemoryTracker(tmp_path / "memory")
    result = train(
        resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, "tracking.log_model=true", "train.epochs=1"]),
        aepipe_pm,
        tracker=memory,
    )
    folder = memory.root / result.run_id / "artifacts" / DIR
    weights = folder / "weights.pt"
    whole = weights.read_bytes()
    # the same files in an MLflow run, for `aepipe encode`
    run = default_tracker().start("faults-model", lease=False)
    run.finish("FINISHED")
    inputs = tmp_path / "x.npy"
    import numpy as np

    np.save(inputs, np.zeros((2, 64)))
    for damaged, said in (
        (b"", r"empty: 0 bytes"),
        (whole[: len(whole) // 2], r"\S+ kB: \w+"),
        (whole[:2], r"2 bytes: \w+"),
    ):
        weights.write_bytes(damaged)
        with pytest.raises(ConfigError) as exc:
            load_run_model(result.run_id, tracker=memory, pm=aepipe_pm)
        assert re.fullmatch(
            rf"run {result.run_id}: {DIR}/weights\.pt is damaged \({said}.*\); it cannot be read", str(exc.value)
        )
        MlflowClient().log_artifacts(run.run_id, str(folder), DIR)
        out = _cli("encode", run.run_id, str(inputs), "-o", str(tmp_path / "codes.npy"), "--device", "cpu")
        assert out.exit_code == 2, out.output
        assert re.fullmatch(rf"Error: run {run.run_id}: {DIR}/weights\.pt is damaged \({said}.*\); it cannot be read",
                            _one_line(out.stderr)), out.stderr
        assert "weights_only" not in out.stderr


# --- the sweep: runs of dead processes -------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_sweep_ends_only_runs_whose_process_died(tmp_path):
    from aepipe.tracking.sweep import sweep

    tracker = MemoryTracker(tmp_path)
    here, now = socket.gethostname(), time.time()

    def run(owner: str | None, beat: float = now, status: str = "RUNNING", **tags: str) -> str:
        r = tracker.start("sweep", lease=False, tags=tags)
        if owner is not None:
            r.set_tags({LEASE_OWNER: owner, LEASE_BEAT: f"{beat:.0f}"})
        tracker.runs[r.run_id].status = status
        return r.run_id

    dead = run(f"{here}:{_dead_pid()}:123")
    dead_elsewhere = run("elsewhere:99:1", beat=now - 3600)
    mine = run(lease_owner())
    parent = run(f"{here}:{os.getppid()}:", beat=now - 3600)  # alive on this host: however old its heartbeat
    live_elsewhere = run("elsewhere:99:1", beat=now - 5)
    no_lease = run(None)
    trial = run(f"{here}:{_dead_pid()}:1", **{"aepipe.study": "s"})  # left to `aepipe tune`
    ended_already = run(f"{here}:{_dead_pid()}:1", status="FAILED")
    folder = tracker.checkpoint_dir(dead)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"kept")
    (folder / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")

    ended = sweep(tracker)
    assert sorted(r.run_id for r in ended) == sorted([dead, dead_elsewhere])
    assert {k: tracker.runs[k].status for k in (dead, dead_elsewhere, mine, parent, live_elsewhere, no_lease, trial,
                                                ended_already)} == {
        dead: "KILLED", dead_elsewhere: "KILLED", mine: "RUNNING", parent: "RUNNING", live_elsewhere: "RUNNING",
        no_lease: "RUNNING", trial: "RUNNING", ended_already: "FAILED"}
    assert re.fullmatch(
        rf"its process \(process \d+ on {re.escape(here)}\) died while the run was RUNNING; ended by the next aepipe "
        rf"command \(pid {os.getpid()}\); continue it from its last checkpoint with: aepipe train --resume {dead}",
        tracker.runs[dead].tags["aepipe.error"],
    )
    assert (
        "if it wrote a checkpoint, continue it on elsewhere with" in tracker.runs[dead_elsewhere].tags["aepipe.error"]
    )
    assert os.listdir(folder) == ["checkpoint.pt"], "the checkpoint stays; the half-written file goes"
    assert sweep(tracker) == [], "a second sweep finds nothing to do"


def test_sweeps_at_once_end_a_run_once_and_never_end_one_a_resume_took_over(tmp_path):
    from aepipe.tracking.sweep import end_dead_runs

    tracker = MemoryTracker(tmp_path)
    started = tracker.start("race")
    run_id = started.run_id
    tracker.runs[run_id].tags[LEASE_OWNER] = f"{socket.gethostname()}:{_dead_pid()}:1"
    listed = tracker.running_runs()  # command A lists the runs ...
    assert end_dead_runs(tracker, tracker.running_runs(), lambda r: "B") != []  # ... command B sweeps first
    assert end_dead_runs(tracker, listed, lambda r: "A") == [], "A finds it ended already"
    assert tracker.runs[run_id].tags["aepipe.error"] == "B"

    # a `--resume` takes the run over while a sweep ends it: the run is given back, RUNNING
    tracker.runs[run_id].status = "RUNNING"
    tracker.runs[run_id].tags[LEASE_OWNER] = f"{socket.gethostname()}:{_dead_pid()}:1"
    end = tracker.end_run

    def end_while_resumed(rid, status, reason=None):
        took = end(rid, status, reason)
        tracker.resume(rid)  # the other command took the lease and marked it RUNNING in between
        tracker.runs[rid].status = "KILLED"  # ... before this command's end reached the store
        return took

    tracker.end_run = end_while_resumed
    assert end_dead_runs(tracker, tracker.running_runs(), lambda r: "A") == []
    assert tracker.runs[run_id].status == "RUNNING" and tracker.runs[run_id].tags[LEASE_OWNER] == lease_owner()


def test_a_run_whose_process_died_is_ended_by_the_next_command(store):
    """A run left RUNNING by a process killed outright is ended KILLED by the next command that
    opens the store, once per process, with the reason and how to continue."""
    from mlflow import MlflowClient

    from aepipe.tracking import default_tracker, sweep

    tracker = default_tracker()
    run = tracker.start("faults-sweep")  # leased to this process ...
    pid = _dead_pid()
    tracker.client.set_tag(run.run_id, LEASE_OWNER, f"{socket.gethostname()}:{pid}:1")  # ... now to one that died
    run.close()
    assert MlflowClient().get_run(run.run_id).info.status == "RUNNING"
    sweep._swept.clear()  # as in a new command
    with pytest.warns(
        sweep.RunEndedWarning,
        match=rf"run {run.run_id} was left RUNNING by process {pid} on \S+, which died; "
        r"marked KILLED \(it had written no checkpoint; train it again\)",
    ):
        _cli("compare", "-e", "faults-sweep")
    record = MlflowClient().get_run(run.run_id)
    assert record.info.status == "KILLED" and f"process {pid}" in record.data.tags["aepipe.error"]


# --- no metric lost --------------------------------------------------------------------------------


def test_every_checkpoint_claims_only_epochs_whose_metrics_are_stored(store, monkeypatch):
    """Metrics are written in the background, here once a minute: each checkpoint (periodic, and
    the last) is written only once the store holds every epoch it claims, so a process killed
    right after it loses no metric (--resume logs only the epochs after the checkpoint's)."""
    from mlflow import MlflowClient

    from aepipe import tracking
    from aepipe.tracking import mlflow_run
    from aepipe.training import state as state_module

    monkeypatch.setattr(mlflow_run, "FLUSH_SECONDS", 60.0)
    tracking.setup()
    client, real, seen = MlflowClient(), state_module.save_tensors, []

    def save(path, obj):
        run_id = path.parent.name
        seen.append((obj["state"]["epoch"], _steps(client, run_id, "loss"), _steps(client, run_id, "val_loss")))
        return real(path, obj)

    monkeypatch.setattr(state_module, "save_tensors", save)
    started = time.time()
    out = _cli("train", str(PIPELINES / "vanilla.toml"), "-q", *SETS, "--set", "train.epochs=5", "--set",
               "train.checkpoint_every=2",
               "--set", "train.checkpoint_seconds=0", "--set", 'tracking.experiment="faults-flush"')
    assert out.exit_code == 0, out.output
    assert time.time() - started < 50, "no checkpoint waited for the writer's interval"
    assert [epoch for epoch, _, _ in seen] == [2, 4, 5]
    for epoch, loss, val_loss in seen:
        assert loss == val_loss == list(range(1, epoch + 1)), (epoch, loss, val_loss)


def test_a_store_that_refuses_to_end_a_run_does_not_hide_why_it_stopped(tmp_path, monkeypatch):
    """Ctrl-C, and the store then refuses to mark the run KILLED: the stop is still what the user
    is told (the run is left to the next command's sweep, with a warning), and its checkpoint is
    written."""
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking.memory import MemoryRun
    from aepipe.training import Interrupted
    from aepipe.training.loop import RunNotEndedWarning

    from helpers import sigint_at_epoch_end

    pm = get_plugin_manager()
    pm.register_plugin(sigint_at_epoch_end(2), name="sigint")

    def refuse(self, status, reason=None):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(MemoryRun, "finish", refuse)
    tracker = MemoryTracker(tmp_path)
    with pytest.warns(
        RunNotEndedWarning,
        match=r"run \w+ could not be marked KILLED \(database is locked\); the next aepipe command "
        r"that opens the store ends it",
    ):
        with pytest.raises(Interrupted, match=r"stopped by SIGINT at epoch 3, batch 0 of \d+; run \w+ marked KILLED"):
            train(resolve(pm, PIPELINES / "vanilla.toml", [*QUIET, "train.epochs=4"]), pm, tracker=tracker)
    (run,) = tracker.runs.values()
    assert run.status == "RUNNING", "left to the sweep"
    assert (tracker.root / run.run_id / "artifacts" / "checkpoint" / "checkpoint.pt").is_file()


def test_a_run_killed_after_its_last_checkpoint_finishes_on_resume(aepipe_pm, tmp_path):
    """Killed between its last checkpoint and the end of the run, a run is KILLED with a
    checkpoint that says it is done: --resume trains no epoch and finishes it. A FINISHED run
    still asks for more epochs."""
    tracker = MemoryTracker(tmp_path)
    result = train(
        resolve(aepipe_pm, PIPELINES / "vanilla.toml", [*QUIET, "train.epochs=3"]), aepipe_pm, tracker=tracker
    )
    with pytest.raises(
        ConfigError, match=rf"--resume {result.run_id}: the run already finished \(3 epochs\); raise train.epochs"
    ):
        train(None, aepipe_pm, resume=result.run_id, tracker=tracker)
    run = tracker.runs[result.run_id]
    run.status = "KILLED"  # as the sweep ends it
    again = train(None, aepipe_pm, resume=result.run_id, tracker=tracker)
    assert again.epochs == 3 and run.status == "FINISHED"
    assert [step for step, _ in run.metrics["loss"]] == [1, 2, 3]



def test_a_run_that_stopped_early_and_was_killed_while_finishing_trains_no_more_on_resume(aepipe_pm, tmp_path):
    """Early stopping ended its training; killed during the end-of-run logging, --resume finishes
    it without training past the early stop."""
    tracker = MemoryTracker(tmp_path)
    stop_early = [*QUIET, "train.epochs=20", "train.patience=1", "train.min_delta=1000"]
    result = train(resolve(aepipe_pm, PIPELINES / "vanilla.toml", stop_early), aepipe_pm, tracker=tracker)
    assert result.stopped_early and result.epochs == 2
    run = tracker.runs[result.run_id]
    run.status = "KILLED"  # as the sweep ends it
    again = train(None, aepipe_pm, resume=result.run_id, tracker=tracker)
    assert again.epochs == 2 and again.stopped_early and run.status == "FINISHED"
    assert [step for step, _ in run.metrics["loss"]] == [1, 2]

# --- SIGKILL at any moment -------------------------------------------------------------------------

EPOCHS = 12


def _kill_plans(seed: int = 19) -> list[tuple[str, int, float]]:
    """(phase, epoch, delay): where each try's process is killed. Seeded: the same every time."""
    rng = random.Random(seed)
    epochs = [("epochs", rng.randint(1, EPOCHS - 1), round(rng.uniform(0.0, 0.3), 2)) for _ in range(3)]
    return [("start", 0, 0.0), *epochs, ("end", EPOCHS, 1.0)]


def _kill_when(proc, plan, client, experiment: str, log: list[str]) -> None:
    """Kill ``proc`` as ``plan`` says: once its run exists (start), after an epoch's line and a
    delay (epochs, often inside a checkpoint), or SIGTERM after the last epoch, SIGKILL a second
    later (during the end-of-run logging)."""
    phase, epoch, delay = plan
    if phase == "start":
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name(experiment)
            if exp and client.search_runs([exp.experiment_id]):
                proc.kill()
                return
            time.sleep(0.02)
        return
    for line in proc.stderr:
        log.append(line)
        if line.startswith(f"epoch {epoch}/"):
            if phase == "end":
                proc.send_signal(signal.SIGTERM)
            time.sleep(delay)
            proc.kill()
            return


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_no_run_running_and_loses_no_metric(aepipe_store):
    """`aepipe train` killed outright at seeded moments (as its run starts, during epochs and
    checkpoints, and SIGTERM then SIGKILL a second later, during the end-of-run logging of
    figures and model, seconds long): the next `aepipe`
    command ends every run KILLED saying how to continue, and `--resume` gives each a metric
    history with every epoch exactly once (metrics are written in the background every 2 s, so
    each kill finds epochs not yet stored)."""
    from mlflow import MlflowClient

    from aepipe import tracking

    tracking.setup()  # the store, created before the processes start
    client = MlflowClient()
    env = {**os.environ, "AEPIPE_HOME": str(aepipe_store), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    plans = _kill_plans()
    procs, logs, watchers = [], [], []
    for i, plan in enumerate(plans):
        sets = [*QUIET, f"train.epochs={EPOCHS}", "train.checkpoint_every=2", "train.checkpoint_seconds=0",
                f'tracking.experiment="kill-{i}"',
                *(["tracking.log_images=true", "tracking.log_model=true"] if plan[0] == "end" else [])]
        proc = subprocess.Popen([sys.executable, "-m", "aepipe.cli", "train", str(PIPELINES / "vanilla.toml"),
                                 *sum((["--set", s] for s in sets), [])], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        logs.append([])
        watchers.append(
            threading.Thread(target=_kill_when, args=(proc, plan, client, f"kill-{i}", logs[-1]), daemon=True)
        )
        watchers[-1].start()
    began = time.time()
    try:
        for proc, watcher in zip(procs, watchers):
            watcher.join(timeout=300)
            proc.wait(timeout=60)
        print(f"killed after {time.time() - began:.1f}s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    runs, left = {}, []
    for i, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == -signal.SIGKILL, (plans[i], proc.returncode, "".join(log)[-2000:])
        found = client.search_runs([client.get_experiment_by_name(f"kill-{i}").experiment_id])
        assert len(found) == 1
        runs[i] = found[0].info.run_id
        if found[0].info.status == "RUNNING":  # killed outright: left RUNNING, unless a later process's start swept it
            left.append(i)
        else:  # a process that opened the store after this kill swept it (on a busy machine, not only the first plan's)
            assert found[0].info.status == "KILLED", plans[i]
    assert left, "the runs killed last are left RUNNING for the next command to end"

    # the next command, whatever it is, ends them
    out = subprocess.run([sys.executable, "-m", "aepipe.cli", "compare", "-e", "kill-0"], env=env, capture_output=True,
                         text=True, timeout=300)
    for i in left:
        assert re.search(
            rf"^Warning: run {runs[i]} was left RUNNING by process {procs[i].pid} on \S+, which died; marked KILLED",
            out.stderr,
            re.M,
        ), out.stderr
    print(f"swept after {time.time() - began:.1f}s")
    every = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r.info.run_id for r in every if r.info.status == "RUNNING"]
    for i, run_id in runs.items():
        run = client.get_run(run_id)
        assert (
            run.info.status == "KILLED" and f"its process (process {procs[i].pid} on " in run.data.tags["aepipe.error"]
        )
        assert not _partial_files(aepipe_store / "checkpoints")

        resumed = _cli("train", "--resume", run_id, "-q")
        if "it had written no checkpoint" in run.data.tags["aepipe.error"]:
            assert resumed.exit_code == 2 and "no checkpoint for this run" in _one_line(resumed.stderr), (
                plans[i],
                resumed.output,
            )
            assert plans[i][0] == "start" or plans[i][1] < 2, plans[i]
            continue
        assert resumed.exit_code == 0, (plans[i], resumed.output)
        assert client.get_run(run_id).info.status == "FINISHED"
        for key in ("loss", "val_loss", "lr"):
            assert _steps(client, run_id, key) == list(range(1, EPOCHS + 1)), (plans[i], key)
