"""The run lifecycle: safe resume, leases, stopping between batches, the in-memory tracker,
hook wrappers around epochs, schedules, and models that survive a plugin's refactor."""

from __future__ import annotations

import math
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from aepipe import hookimpl
from aepipe.config import resolve
from aepipe.errors import ConfigError
from aepipe.tracking.memory import MemoryTracker
from aepipe.training import Interrupted, train

from conftest import PIPELINES, QUIET
from helpers import sigint_at_epoch_end



def _evil_pickle(marker) -> bytes:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"format": 2, "state": Payload()})


# --- resume never trusts its input ---------------------------------------------------------------


def test_a_crafted_run_id_never_reaches_the_file_system(store, tmp_path):
    from click.testing import CliRunner

    from aepipe.cli import cli

    # where `--resume ../../somewhere` used to look, a checkpoint that runs code when unpickled
    marker = tmp_path / "code-ran"
    planted = store.parent / "somewhere" / "checkpoint.pt"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(_evil_pickle(marker))
    runner = CliRunner()
    for args in (
        ["train", "--resume", "../../somewhere"],
        ["train", str(PIPELINES / "vanilla.toml"), "--resume", "../somewhere"],
        ["encode", "../../somewhere", str(planted), "-o", str(tmp_path / "x.npy")],
    ):
        out = runner.invoke(cli, args)
        assert out.exit_code == 2, out.output
        assert "not a run id (32 hexadecimal digits" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    # an id that looks right but is not in the store: said so, nothing read
    out = runner.invoke(cli, ["train", "--resume", "f" * 32])
    assert out.exit_code == 2 and f"run '{'f' * 32}' not found" in out.stderr


def test_a_pickled_object_in_a_checkpoint_is_refused(aepipe_pm, tmp_path):
    tracker = MemoryTracker(tmp_path / "memory")
    run = tracker.start("lifecycle")
    run.finish("KILLED", "interrupted")
    marker = tmp_path / "code-ran"
    path = tracker.checkpoint_dir(run.run_id) / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(_evil_pickle(marker))
    with pytest.raises(ConfigError, match=r"checkpoint.pt holds more than tensors and plain data; refusing to load it"):
        train(None, aepipe_pm, resume=run.run_id, tracker=tracker)
    assert not marker.exists()
    # a torch.save'd module (a pickled class) is refused the same way
    torch.save({"format": 2, "state": {"pipeline": ""}, "model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(ConfigError, match="holds more than tensors and plain data"):
        train(None, aepipe_pm, resume=run.run_id, tracker=tracker)


# --- a run being trained is leased --------------------------------------------------------------


@pytest.mark.slow
def test_a_live_run_cannot_be_resumed_and_is_not_damaged(aepipe_pm, store):
    """`aepipe train` in another process holds its run: `--resume` of it is refused naming that
    process; the run goes on unharmed, stops on Ctrl-C with a checkpoint, and the printed command
    continues it to the epochs it was started with (not the file's)."""
    from click.testing import CliRunner
    from mlflow import MlflowClient

    from aepipe import tracking
    from aepipe.cli import cli

    env = {**os.environ, "AEPIPE_HOME": str(store), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = ["--set", "train.epochs=2000", "--set", "train.patience=0", "--set", "tracking.experiment=\"leased\"",
            *sum((["--set", q] for q in QUIET), [])]
    proc = subprocess.Popen([sys.executable, "-m", "aepipe.cli", "train", str(PIPELINES / "vanilla.toml"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        tracking.setup()
        client = MlflowClient()
        deadline = time.time() + 120
        run_id = None
        while run_id is None:
            assert proc.poll() is None and time.time() < deadline, (
                proc.stderr.read() if proc.poll() is not None else "timed out"
            )
            exp = client.get_experiment_by_name("leased")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
                run_id = runs[0].info.run_id
            time.sleep(0.2)
        out = CliRunner().invoke(cli, ["train", str(PIPELINES / "vanilla.toml"), *args, "--resume", run_id])
        assert out.exit_code == 2, out.output
        assert re.search(
            rf"--resume: run {run_id} is still being trained by process {proc.pid} on \S+ \(heartbeat \d+s ago\)",
            out.stderr,
        )
        assert proc.poll() is None, "the attempt must not disturb the live run"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    command = re.search(r"continue with: (aepipe train --resume \w+)$", err.strip())
    assert command and command.group(1) == f"aepipe train --resume {run_id}"
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "stopped by SIGINT" in run.data.tags["aepipe.error"]
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps == sorted(set(steps)) and steps == list(range(1, len(steps) + 1)), "no epoch logged twice"
    # the run is whole: it continues from its checkpoint (two more epochs, then Ctrl-C again),
    # logging each epoch once
    with pytest.raises(Interrupted, match=rf"stopped by SIGINT at epoch {len(steps) + 3}, batch 0 of 20"):
        train(None, aepipe_pm, resume=run_id, reporter=_stop_after(2))
    after = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert after == list(range(1, len(steps) + 3)) and client.get_run(run_id).info.status == "KILLED"


def _stop_after(n: int):
    seen = []

    def reporter(epoch, total, metrics):
        seen.append(epoch)
        if len(seen) == n:
            os.kill(os.getpid(), signal.SIGINT)

    return reporter



def test_resume_continues_to_the_epochs_the_run_was_started_with(tmp_path):
    """After `--set train.epochs=6` and Ctrl-C, resuming with the pipeline file (60 epochs) or
    with nothing continues to 6, as the run's own pipeline says."""
    from aepipe.plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.register_plugin(sigint_at_epoch_end(2), name="sigint")
    tracker = MemoryTracker(tmp_path)
    with pytest.raises(Interrupted, match="continue with: aepipe train --resume") as exc:
        train(
            resolve(pm, PIPELINES / "vanilla.toml", [*QUIET, "train.epochs=6", "train.patience=0"]), pm, tracker=tracker
        )
    run_id = str(exc.value).rsplit(" ", 1)[1]
    plain = get_plugin_manager()
    result = train(
        resolve(plain, PIPELINES / "vanilla.toml", [*QUIET, "train.patience=0"]), plain, resume=run_id, tracker=tracker
    )
    assert result.epochs == 6 and [s for s, _ in tracker.runs[run_id].metrics["loss"]] == [1, 2, 3, 4, 5, 6]
    assert tracker.runs[run_id].params["train.epochs"] == "6"


# --- stopping between batches, resuming exactly ---------------------------------------------------


def _interrupter() -> types.ModuleType:
    """A regularizer that adds nothing and sends Ctrl-C at a chosen training step."""
    plugin = types.ModuleType("interrupter")

    @hookimpl
    def aepipe_register_regularizers(register):
        from aepipe.components import Regularizer

        class SigintAt(Regularizer):
            """Sends SIGINT to this process at training step ``at`` (set by the test)."""

            name = "sigint-at"
            at = {"step": None, "seen": 0}

            def penalty(self, step):
                if step.training:
                    SigintAt.at["seen"] += 1
                    if SigintAt.at["seen"] == SigintAt.at["step"]:
                        os.kill(os.getpid(), signal.SIGINT)
                return None

        plugin.SigintAt = SigintAt
        register(SigintAt)

    plugin.aepipe_register_regularizers = aepipe_register_regularizers
    return plugin


@pytest.mark.parametrize("variant,streamed", [("vae", False), ("denoising", False), ("vae", True)])
def test_a_run_stopped_inside_an_epoch_resumes_to_the_same_weights_and_history(variant, streamed, tmp_path):
    """Ctrl-C mid-epoch: the checkpoint holds the position inside the epoch (its order, the
    metric sums so far, the random state), so the resumed run equals the uninterrupted one,
    weights and every logged value, with stochastic encoders and corruptions alike, and with the
    data streamed through a DataLoader worker (whose seeds never touch the training stream)."""
    from aepipe.plugins import get_plugin_manager

    plugin = _interrupter()
    pm = get_plugin_manager()
    pm.register_plugin(plugin, name="interrupter")
    overrides = [*QUIET, "train.epochs=3", "train.patience=0", "model.regularizers.stop.name=\"sigint-at\"",
                 "model.encoder.hidden=[32]", "model.decoder.hidden=[32]"] if variant == "vae" else \
                [*QUIET, "train.epochs=3", "train.patience=0", "model.regularizers.stop.name=\"sigint-at\""]
    if streamed:
        overrides += ["data.in_memory=false", "data.workers=1"]
    pipeline = resolve(pm, tree={"variant": variant}, overrides=overrides)
    full_tracker, tracker = MemoryTracker(tmp_path / "full"), MemoryTracker(tmp_path / "cut")
    full = train(pipeline, pm, tracker=full_tracker)
    plugin.SigintAt.at.update(step=16, seen=0)  # mid-epoch 2 (the sanity check takes the first step)
    with pytest.raises(Interrupted, match=r"stopped by SIGINT at epoch 2, batch [1-9]\d* of \d+;") as exc:
        train(pipeline, pm, tracker=tracker)
    run_id = str(exc.value).rsplit(" ", 1)[1]
    assert tracker.runs[run_id].status == "KILLED"
    resumed = train(None, pm, resume=run_id, tracker=tracker)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    logged = tracker.runs[run_id].metrics
    expected = full_tracker.runs[full.run_id].metrics
    for key in ("loss", "recon", "val_loss", "val_mse", "lr"):
        assert [v for _, v in logged[key]] == [v for _, v in expected[key]], key
    assert resumed.metrics["test_loss"] == full.metrics["test_loss"]


# --- the loop without a store ---------------------------------------------------------------------


def test_the_loop_runs_on_the_in_memory_tracker_without_mlflow(tmp_path):
    """A whole run (figures and model files included) on the in-memory tracker: MLflow is never
    imported, and the run's record holds what the MLflow tracker would."""
    script = f"""
import sys
from aepipe.config import resolve
from aepipe.plugins import get_plugin_manager
from aepipe.tracking.memory import MemoryTracker
from aepipe.training import train
pm = get_plugin_manager()
tracker = MemoryTracker({str(tmp_path)!r})
result = train(resolve(pm, {str(PIPELINES / "vae.toml")!r}, ["train.epochs=3"]), pm, tracker=tracker)
run = tracker.runs[result.run_id]
assert run.status == "FINISHED", run.status
assert [s for s, _ in run.metrics["val_loss"]] == [1, 2, 3]
assert run.params["variant"] == "vae" and "test_iw_nll" in run.latest()
files = sorted(p.relative_to(tracker.root / result.run_id / "artifacts").as_posix()
               for p in (tracker.root / result.run_id).rglob("*") if p.is_file())
stored = {{"pipeline.toml", "images/reconstructions.png", "aepipe-model/weights.pt", "checkpoint/checkpoint.pt"}}
assert stored <= set(files), files
from aepipe.runs import load_model as load_run_model
model = load_run_model(result.run_id, tracker=tracker, pm=pm)
import torch
assert torch.allclose(model.encode(result.data.x_test[:4]).code, result.model.encode(result.data.x_test[:4]).code)
assert "mlflow" not in sys.modules, "the in-memory tracker must not import MLflow"
print("ok")
"""
    env = {**os.environ, "AEPIPE_HOME": str(tmp_path / "no-store")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
    assert not (tmp_path / "no-store").exists(), "no MLflow store is created"


# --- schedules --------------------------------------------------------------------------------------


def _histories(pm, tree, overrides, tmp_path):
    tracker = MemoryTracker(tmp_path)
    result = train(resolve(pm, tree=tree, overrides=[*QUIET, "train.patience=0", *overrides]), pm, tracker=tracker)
    return {k: [v for _, v in values] for k, values in tracker.runs[result.run_id].metrics.items()}


def test_lr_and_kl_weight_follow_their_schedules(aepipe_pm, tmp_path):
    """Cosine with a 2-epoch linear warm-up; KL annealed over 3 epochs (0, 1/3, 2/3, then beta)."""
    lr = 2e-3
    h = _histories(aepipe_pm, {"variant": "vae"}, ["train.epochs=6", f"train.lr={lr}",
                                                   "train.lr_schedule.name=\"cosine\"",
                                                    "train.lr_schedule.warmup_epochs=2",
                                                    "model.regularizers.kl.warmup_epochs=3",
                                                    "model.regularizers.kl.beta=0.5", "model.encoder.hidden=[32]",
                                                    "model.decoder.hidden=[32]"], tmp_path)
    cosine = [lr * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert h["lr"] == pytest.approx([lr / 3, 2 * lr / 3, *cosine], rel=1e-6)
    assert h["weight.kl"] == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5, 0.5, 0.5])
    # the KL term in training grows with its weight; validation always uses the full weight
    assert h["penalty.kl"][0] == 0.0 and h["penalty.kl"][3] > 0
    assert all(v > 0 for v in h["val_penalty.kl"])


@pytest.mark.parametrize("schedule, expected", [
    (["train.lr_schedule.name=\"step\"", "train.lr_schedule.step_size=2", "train.lr_schedule.gamma=0.5"],
     [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4]),
    (["train.lr_schedule.name=\"exponential\"", "train.lr_schedule.gamma=0.9"], [1e-3 * 0.9 ** k for k in range(5)]),
    (["train.lr_schedule.name=\"exponential\"", "train.lr_schedule.warmup_epochs=1"],
     [5e-4, 1e-3, 9.5e-4, 9.025e-4, 8.57375e-4]),
])
def test_epoch_schedules(aepipe_pm, tmp_path, schedule, expected):
    h = _histories(aepipe_pm, {"variant": "vanilla"}, ["train.epochs=5", "train.lr=1e-3", *schedule], tmp_path)
    assert h["lr"] == pytest.approx(expected, rel=1e-6)


def test_onecycle_steps_per_batch_and_plateau_watches_val_loss(aepipe_pm, tmp_path):
    h = _histories(
        aepipe_pm,
        {"variant": "vanilla"},
        ["train.epochs=6", "train.lr=1e-3", 'train.lr_schedule.name="onecycle"', "train.lr_schedule.max_lr=0.01"],
        tmp_path,
    )
    peak = h["lr"].index(max(h["lr"]))
    assert 0 < peak < 5 and max(h["lr"]) > 5e-3 and h["lr"][-1] < h["lr"][peak] / 5  # rises, then anneals
    h = _histories(aepipe_pm, {"variant": "vanilla"}, ["train.epochs=10", "train.lr=0.5",
                                                       "train.lr_schedule.name=\"plateau\"",
                                                        "train.lr_schedule.patience=0", "train.lr_schedule.factor=0.5"],
                                                        tmp_path)
    lr, val = h["lr"], h["val_loss"]
    halved = [i for i in range(len(lr) - 1) if lr[i + 1] == pytest.approx(lr[i] / 2)]
    assert halved, "a plateau in val_loss halves the learning rate"
    for i in range(len(lr) - 1):
        assert lr[i + 1] == pytest.approx(lr[i]) or i in halved
        if i in halved:  # only after an epoch that did not improve on the best val_loss
            assert i > 0 and val[i] >= min(val[:i]) * (1 - 1e-4)
    with pytest.raises(ConfigError, match="onecycle has its own warm-up"):
        resolve(
            aepipe_pm,
            tree={"variant": "vanilla"},
            overrides=['train.lr_schedule.name="onecycle"', "train.lr_schedule.warmup_epochs=2"],
        )
    with pytest.raises(ConfigError, match=r"'model.regularizers.kl.warmup_epochs' = -1: expected a whole number"):
        resolve(aepipe_pm, tree={"variant": "vae"}, overrides=["model.regularizers.kl.warmup_epochs=-1"])


def test_schedules_can_be_tuned(aepipe_pm, tmp_path):
    from aepipe import tune

    path = tmp_path / "s.toml"
    path.write_text('variant = "vae"\n[tune]\nn_trials = 2\n[tune.space]\n'
                    '"train.lr_schedule.name" = { type = "categorical", choices = ["cosine", "step", "none"] }\n'
                    '"model.regularizers.kl.warmup_epochs" = { type = "int", low = 0, high = 10 }\n')
    st = tune.prepare_study(aepipe_pm, path)
    assert set(st.distributions) == {"train.lr_schedule.name", "model.regularizers.kl.warmup_epochs"}


# --- models that survive a plugin's refactor ---------------------------------------------------


def _plugin_with_encoder_in(module_name: str) -> types.ModuleType:
    """A plugin registering encoder 'wide' whose class lives in module ``module_name``."""
    module = types.ModuleType(module_name)
    exec(
        "from aepipe_plugins.networks.basic import MLPEncoder\n"
        "class WideEncoder(MLPEncoder):\n"
        "    '''An MLP encoder (third party).'''\n"
        "    name = 'wide'\n",
        module.__dict__,
    )
    sys.modules[module_name] = module
    plugin = types.ModuleType(f"{module_name}_plugin")
    plugin.aepipe_register_encoders = hookimpl(lambda register: register(module.WideEncoder))
    return plugin


def test_an_old_run_still_encodes_after_its_component_class_moved(tmp_path):
    from aepipe.runs import load_model as load_run_model
    from aepipe.plugins import get_plugin_manager

    before = get_plugin_manager()
    before.register_plugin(_plugin_with_encoder_in("thirdparty_v1.encoders"), name="thirdparty")
    tracker = MemoryTracker(tmp_path)
    result = train(resolve(before, PIPELINES / "vanilla.toml", [*QUIET, "tracking.log_model=true", "train.epochs=2",
                                                                "model.encoder.name=\"wide\"",
                                                                "model.encoder.hidden=[16]"]),
                   before, tracker=tracker)
    x = result.data.x_test[:5]
    expected = result.model.encode(x).code.detach()
    del sys.modules["thirdparty_v1.encoders"]  # version 2 of the plugin moved the class
    after = get_plugin_manager()
    after.register_plugin(_plugin_with_encoder_in("thirdparty_v2.models.enc"), name="thirdparty")
    model = load_run_model(result.run_id, tracker=tracker, pm=after)
    assert type(model.encoder).__module__ == "thirdparty_v2.models.enc"
    assert torch.allclose(model.encode(x).code, expected)
    # a plugin that no longer registers it: named, with the plugin it came from
    with pytest.raises(
        ConfigError,
        match=r"its encoder 'wide' \(model.encoder\) came from plugin 'thirdparty', which no longer "
        r"registers it; install that plugin",
    ):
        load_run_model(result.run_id, tracker=tracker, pm=get_plugin_manager())


def test_a_lease_is_taken_over_only_when_its_process_is_gone_or_its_heartbeat_stale():
    import socket

    from aepipe.tracking.base import LEASE_BEAT, LEASE_OWNER, RunRecord, check_lease, lease_owner

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    now = time.time()

    def record(owner, beat, status="RUNNING"):
        return RunRecord("a" * 32, status, tags={LEASE_OWNER: owner, LEASE_BEAT: f"{beat:.0f}"})

    check_lease(record(f"{here}:{dead.pid}:", now), "--resume")  # same host, process gone: taken over
    check_lease(record("elsewhere:123:456", now - 3600), "--resume")  # another host, stale heartbeat
    check_lease(record(lease_owner(), now, status="KILLED"), "--resume")  # a run that ended holds no lease
    with pytest.raises(ConfigError, match=r"still being trained by process 123 on elsewhere \(heartbeat \d+s ago\)"):
        check_lease(record("elsewhere:123:456", now - 5), "--resume")
    with pytest.raises(ConfigError, match="being trained by this very process"):
        check_lease(record(lease_owner(), now), "--resume")
    parent = f"{here}:{os.getppid()}:"
    with pytest.raises(ConfigError, match=rf"still being trained by process {os.getppid()} on {re.escape(here)}"):
        check_lease(record(parent, now - 3600), "--resume")  # alive on this host: refused however old the beat


def test_a_launchers_echo_of_ctrl_c_is_one_stop_and_a_later_second_ctrl_c_interrupts():
    """torchrun passes Ctrl-C on to processes the terminal signalled already: a second SIGINT
    within ECHO_SECONDS is the same stop; a later one interrupts at once."""
    import signal as signals

    from aepipe.training import epoch

    with epoch.StopRequest() as stop:
        os.kill(os.getpid(), signals.SIGINT)
        try:
            os.kill(os.getpid(), signals.SIGINT)  # the launcher's echo
            time.sleep(0.05)  # the handler runs here
        except KeyboardInterrupt:
            pytest.fail("the launcher's echo of Ctrl-C interrupted at once, as a second Ctrl-C would")
        assert stop.requested and stop.signal_name == "SIGINT"
        time.sleep(epoch.ECHO_SECONDS + 0.1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signals.SIGINT)
            time.sleep(0.1)  # the handler runs here
