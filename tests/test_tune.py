"""aepipe tune: search spaces, pruning, failures, resuming, parallel workers on PostgreSQL
(killed ones included), MLflow parent/child runs and the model registry."""

from __future__ import annotations

import glob
import json
import os
import re
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import PIPELINES
from helpers import free_port, wait_for_http

PASSWORD = "s3cret-pw-4e1"
CLI = [sys.executable, "-m", "aepipe.cli"]


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server on 127.0.0.1 for this test session, with password authentication."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql package)")
    bindir = Path(bins[-1])
    root = Path(tempfile.mkdtemp(prefix="aepipe-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        # runuser lives in /usr/sbin, which a minimal PATH (env -i ... PATH=/usr/local/bin:/usr/bin:/bin) lacks
        runuser = shutil.which("runuser") or next(
            (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)), None
        )
        if runuser is None:
            pytest.skip("runuser is not installed: PostgreSQL cannot be started as the postgres user")
        run_as = [runuser, "-u", "postgres", "--"]
    (root / "pw").write_text(PASSWORD)
    if run_as:
        os.chown(root / "pw", pwd.getpwnam("postgres").pw_uid, -1)
    port = free_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "aepipe", "--pwfile",
                    str(root / "pw"), "--auth", "scram-sha-256"], check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
                   check=True, capture_output=True)
    yield f"postgresql+psycopg://aepipe:{PASSWORD}@127.0.0.1:{port}/postgres"
    subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"], capture_output=True
    )
    shutil.rmtree(root, ignore_errors=True)


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "AEPIPE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _tune(home: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "tune", *args], capture_output=True, text=True, env=_env(home), timeout=timeout)


def _load(name: str, storage: str):
    import optuna

    from aepipe.tune import make_storage

    return optuna.load_study(study_name=name, storage=make_storage(storage))


def _client(home: Path):
    from aepipe import tracking

    os.environ["AEPIPE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    tracking.store.forget()
    tracking.setup()
    from mlflow import MlflowClient

    return MlflowClient()


def _write(tmp_path: Path, text: str, name: str = "t.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


FAST = ["--set", "train.epochs=3", "--set", "tracking.log_images=false", "--set", "tracking.log_dataset=false"]


@pytest.fixture
def home(aepipe_store):
    return aepipe_store


def _tune_here(*args: str):
    """``aepipe tune`` in this process (no interpreter start-up): exit code, stdout, stderr."""
    from click.testing import CliRunner

    from aepipe.cli import cli

    result = CliRunner().invoke(cli, ["tune", *args])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.mark.slow
def test_two_workers_share_a_postgres_study_exactly(postgres_url, home):
    # trials long enough (about 3 s each) that the second worker, starting later, gets some
    out = _tune(home, str(PIPELINES / "vanilla.toml"), "--study", "pg-two", "--storage", postgres_url,
                "--n-trials", "6", "--n-workers", "2", *FAST, "--set", "train.epochs=120", "--set",
                "tune.pruner=\"none\"")
    assert out.returncode == 0, out.stderr[-3000:]
    assert PASSWORD not in out.stdout + out.stderr
    assert "aepipe:***@127.0.0.1" in out.stderr  # the masked URL may be shown
    from optuna.trial import TrialState

    study = _load("pg-two", postgres_url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert len(study.trials) == 6, "no surplus trial: claims are serialized by the study's lock"
    assert len({t.user_attrs["aepipe.worker"] for t in finished}) >= 2  # both workers ran trials
    parent = study.user_attrs["aepipe.mlflow_parent_run_id"]
    client = _client(home)
    for t in finished:
        run = client.get_run(t.user_attrs["aepipe.mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["aepipe.trial"] == str(t.number)
        assert run.data.tags["aepipe.trial_state"] == t.state.name
        for key, value in t.params.items():
            assert run.data.params[key] == str(value)
        everything = json.dumps([run.data.params, run.data.tags])
        assert PASSWORD not in everything
    parent_run = client.get_run(parent)
    assert PASSWORD not in json.dumps([parent_run.data.params, parent_run.data.tags])
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags["best.trial"] == str(study.best_trial.number)
    assert parent_run.data.metrics["best.val_loss"] == pytest.approx(study.best_value)
    files = {a.path for a in client.list_artifacts(parent, "study")}
    assert {"study/optimization_history.png", "study/param_importances.png", "study/best_trials.json"} <= files
    versions = client.search_model_versions("name = 'pg-two'")
    assert [v.run_id for v in versions] == [study.best_trial.user_attrs["aepipe.mlflow_run_id"]]


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_the_study_completes(postgres_url, home):
    from optuna.trial import TrialState

    proc = subprocess.Popen([*CLI, "tune", str(PIPELINES / "vanilla.toml"), "--study", "pg-kill", "--storage",
                             postgres_url, "--n-trials", "3", "--n-workers", "2", "--set", "train.epochs=150", "--set",
                             "tune.pruner=none",
                             "--set", "train.checkpoint_seconds=0",  # a checkpoint every epoch: leftovers to clean
                             "--set", "tracking.log_model=false", "--set", "tracking.log_images=false"],
                            env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.time() + 180
    seen_password_in_ps = False
    while time.time() < deadline and victim is None:
        time.sleep(0.5)
        try:
            study = _load("pg-kill", postgres_url)
        except Exception:  # noqa: BLE001 - not created yet
            continue
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        seen_password_in_ps |= any(
            PASSWORD in line for line in ps.splitlines() if "aepipe.cli" in line and "--worker" in line
        )
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        running = [t for t in study.trials if t.state == TrialState.RUNNING and "aepipe.worker" in t.user_attrs
                   and "aepipe.mlflow_run_id" in t.user_attrs  # its run has started
                   and not t.user_attrs["aepipe.worker"].endswith(f":{proc.pid}")  # a child, not the command itself
                   and _client(home).get_metric_history(t.user_attrs["aepipe.mlflow_run_id"], "loss")]  # epochs logged
        if done and running:
            victim = running[0]
    if victim is None:
        proc.kill()
    assert victim is not None, f"no trial was running: {proc.communicate()[1][-3000:] if victim is None else ''}"
    assert not seen_password_in_ps, "the workers' command lines must not carry the password"
    pid = int(victim.user_attrs["aepipe.worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-3000:]
    study = _load("pg-kill", postgres_url)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 3
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retried and retried[0].state == TrialState.COMPLETE and retried[0].params == victim.params
    assert "exited with -9" in stderr
    # the dead worker's MLflow run is not left RUNNING: ended FAILED, saying why
    dead_run = killed.user_attrs["aepipe.mlflow_run_id"]
    assert dead_run != retried[0].user_attrs["aepipe.mlflow_run_id"]
    run = _client(home).get_run(dead_run)
    assert run.info.status == "FAILED" and re.search(
        r"worker \S+:\d+ (died|stopped its heartbeat)", run.data.tags["aepipe.error"]
    )
    assert _client(home).get_metric_history(dead_run, "loss"), "it had logged epochs when it was killed"
    assert not (home / "checkpoints" / dead_run).exists(), "the dead trial's checkpoint is removed"
    client = _client(home)
    assert not [r.info.run_id for r in client.search_runs([run.info.experiment_id]) if r.info.status == "RUNNING"]


def test_pruning_study_prunes_and_marks_runs(home, tmp_path):
    path = _write(tmp_path, """
        variant = "vanilla"
        [model]
        code_dim = 16
        [train]
        epochs = 8
        patience = 0
        [tracking]
        experiment = "prune"
        log_model = false
        log_images = false
        log_dataset = false
        [tune]
        n_trials = 5
        sampler = "random"
        pruner = "median"
        warmup_epochs = 1
        [tune.space]
        "train.lr" = { type = "float", low = 1e-5, high = 3e-2, log = true }
    """)
    out = _tune_here(str(path), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["states"].get("PRUNED", 0) >= 1 and summary["states"]["COMPLETE"] + summary["states"]["PRUNED"] == 5
    study = _load("prune-t", f"journal:///{home / 'optuna.journal'}")
    client = _client(home)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    run = client.get_run(pruned[0].user_attrs["aepipe.mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["aepipe.trial_state"] == "PRUNED"
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) < 8  # stopped early
    # resuming with a higher target adds trials to the same study and parent run
    parent = study.user_attrs["aepipe.mlflow_parent_run_id"]
    again = _tune_here(str(path), "--n-trials", "6", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    study = _load("prune-t", f"journal:///{home / 'optuna.journal'}")
    assert len([t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]) == 6
    assert study.user_attrs["aepipe.mlflow_parent_run_id"] == parent
    assert json.loads(again.stdout)["parent_run_id"] == parent
    # --summary reads the study and runs nothing
    before = len(study.trials)
    from click.testing import CliRunner

    from aepipe.cli import cli

    summ = CliRunner().invoke(cli, ["tune", str(path), "--summary"])
    assert summ.exit_code == 0 and "study 'prune-t'" in summ.stdout and "train.lr" in summ.stdout
    assert len(_load("prune-t", f"journal:///{home / 'optuna.journal'}").trials) == before


def test_failing_trials_are_recorded_and_the_study_goes_on(home, tmp_path):
    path = _write(tmp_path, """
        variant = "linear"
        [model]
        code_dim = 4
        [train]
        epochs = 3
        optimizer = "sgd"
        [tracking]
        experiment = "fail"
        log_model = false
        log_images = false
        [tune]
        n_trials = 3
        sampler = "random"
        pruner = "none"
        seed = 3
        max_failures = 20
        [tune.space]
        "train.lr" = { type = "categorical", choices = [0.001, 50.0] }
        "model.encoder.top_k" = { type = "categorical", choices = [2, 9] }
    """)
    out = _tune_here(str(path), "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    study = _load("fail-t", f"journal:///{home / 'optuna.journal'}")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3
    reasons = " | ".join(t.user_attrs.get("aepipe.fail_reason", "") for t in failed)
    assert failed, "the space was built so that some trials fail"
    assert "diverged" in reasons or "top_k = 9 exceeds code_dim = 4" in reasons


BAD_SPACES = [
    ('"model.encoder.hiden" = { type = "int", low = 1, high = 4 }',
     r"\[tune.space\] 'model.encoder.hiden' = 1 is not valid here: .*unknown key 'model.encoder.hiden'"),
    ('"model.code_dim" = { type = "int", low = 9, high = 4 }',
     r"\[tune.space\] 'model.code_dim': empty range: low 9.0 > high 4.0"),
    ('"train.lr" = { type = "float", low = 0.0, high = 1.0, log = true }', r"\[tune.space\] 'train.lr': "),
    ('"model.encoder.name" = { type = "categorical", choices = ["mlp", "transformer"] }',
     r"'model.encoder.name' = 'transformer' is not valid here: .*unknown encoder 'transformer'"),
    ('"model.code_dim" = { type = "categorical", choices = [] }', r"categorical needs a non-empty 'choices' list"),
]


@pytest.mark.parametrize("line,pattern", BAD_SPACES)
def test_bad_search_space_is_one_line_before_any_trial(aepipe_pm, home, tmp_path, line, pattern):
    from aepipe.errors import ConfigError
    from aepipe.tune import prepare_study

    path = _write(tmp_path, f'variant = "vanilla"\n[tune]\nn_trials = 2\n[tune.space]\n{line}\n')
    with pytest.raises(ConfigError, match=pattern) as exc:
        prepare_study(aepipe_pm, path)
    assert "\n" not in str(exc.value)
    assert not (home / "optuna.journal").exists()


def test_bad_tune_settings(aepipe_pm, tmp_path):
    from aepipe.errors import ConfigError
    from aepipe.tune import prepare_study

    path = _write(tmp_path,
                  'variant = "vanilla"\n[tune]\nmetrics = ["val_loss"]\ndirections = ["minimize", '
                  '"maximize"]\n[tune.space]\n"train.lr" = { type = "float", low = 0.001, high = 0.01 }\n')
    with pytest.raises(ConfigError, match="metrics and directions must be lists of the same length"):
        prepare_study(aepipe_pm, path)
    path = _write(tmp_path, 'variant = "vanilla"\n[tune]\nsampler = "grid"\n')
    with pytest.raises(ConfigError, match=r"'tune\.sampler' = 'grid': .*Input should be 'tpe', 'random'"):
        prepare_study(aepipe_pm, path)
    path = _write(tmp_path, 'variant = "vanilla"\n')
    with pytest.raises(ConfigError, match=r"no \[tune\] section"):
        prepare_study(aepipe_pm, path)


def test_unknown_objective_metric_stops_the_study(home, tmp_path):
    path = _write(tmp_path, """
        variant = "vanilla"
        [train]
        epochs = 2
        [tracking]
        log_model = false
        log_images = false
        [tune]
        n_trials = 3
        metric = "val_accuracy"
        [tune.space]
        "train.lr" = { type = "float", low = 0.001, high = 0.01 }
    """)
    out = _tune_here(str(path))
    assert out.returncode == 2
    assert (
        out.stderr.strip().splitlines()[-1].startswith("Error: ")
        and "metric 'val_accuracy' is not a per-epoch metric" in out.stderr
    )
    # the first trial is recorded as failed with the reason, and no further trial is started
    trials = _load("aepipe-t", f"journal:///{home / 'optuna.journal'}").trials
    assert [t.state.name for t in trials] == ["FAIL"]
    assert "metric 'val_accuracy'" in trials[0].user_attrs["aepipe.fail_reason"]


def test_multi_objective_study_logs_a_pareto_front(home):
    out = _tune_here(
        str(PIPELINES / "vae.toml"), "--n-trials", "3", *FAST, "--set", "tracking.log_model=false", "--json"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["best"] and {"val_recon", "val_kl"} <= set(summary["best"][0])
    client = _client(home)
    files = {a.path for a in client.list_artifacts(summary["parent_run_id"], "study")}
    assert "study/pareto_front.png" in files
    # every trial on the front, and only those, had its files logged when the study ended (what
    # is logged, figures, model, dataset, is off here)
    front = {row["run_id"] for row in summary["best"]}
    for run in client.search_runs([client.get_run(summary["parent_run_id"]).info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}'"):
        assert (run.data.tags.get("aepipe.artifacts") == "logged") == (run.info.run_id in front), (
            run.info.run_id,
            front,
        )


def test_postgres_url_without_driver_and_bad_credentials(aepipe_pm, postgres_url):
    from aepipe.errors import ConfigError
    from aepipe.tune import make_storage

    with pytest.raises(ConfigError, match=r"use postgresql\+psycopg://"):
        make_storage(postgres_url.replace("+psycopg", ""))
    wrong = postgres_url.replace(PASSWORD, "wrong-password-xyz")
    with pytest.raises(ConfigError) as exc:
        make_storage(wrong)
    assert "wrong-password-xyz" not in str(exc.value) and "aepipe:***@" in str(exc.value)


def test_sqlite_storage_is_refused_for_parallel_workers(home, tmp_path):
    out = _tune_here(str(PIPELINES / "vanilla.toml"), "--storage", f"sqlite:///{tmp_path}/o.db", "--n-workers", "2")
    assert out.returncode == 2 and "not safe for parallel workers" in out.stderr


def test_workers_are_placed_one_per_gpu_among_the_visible_ones():
    from aepipe.tune import worker_placement

    # 3 workers on the GPUs this process may use (CUDA_VISIBLE_DEVICES=2,5): children keep to them
    placed = worker_placement(3, "auto", 2, 16, "2,5")
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in placed] == ["2", "5", "2"]
    assert placed[0].gpu == 0 and placed[1].gpu is None  # this process takes its first visible GPU
    assert {p.env["AEPIPE_NUM_THREADS"] for p in placed} == {"5"}
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in worker_placement(4, "cuda", 2, 16, None)] == ["0", "1", "0", "1"]
    # a named device is every worker's; no GPUs: CPU threads shared out
    for device, gpus in (("cuda:1", 2), ("cpu", 2), ("auto", 0)):
        placed = worker_placement(2, device, gpus, 2, None)
        assert all("CUDA_VISIBLE_DEVICES" not in p.env and p.gpu is None for p in placed), device
        assert [p.env["AEPIPE_NUM_THREADS"] for p in placed] == ["1", "1"]


def test_a_worker_whose_command_died_before_it_watched_stops_at_once():
    """The worker watches the command pid it was given, not whatever its parent is by then: a
    command killed while the worker was still starting (it is re-parented already) is noticed."""
    from aepipe.tune.study import COMMAND_ENV

    code = (
        "from aepipe.tune import stop_with_parent; import time; stop_with_parent(0.05); time.sleep(1.5); print('alive')"
    )
    env = {**os.environ, COMMAND_ENV: f"{socket.gethostname()}:{os.getpid() + 10**6}"}  # a pid that is not its parent
    out = subprocess.run([sys.executable, "-c", code], env=env, timeout=30, capture_output=True, text=True)
    assert out.returncode == -signal.SIGTERM and "alive" not in out.stdout
    env[COMMAND_ENV] = f"{socket.gethostname()}:{os.getpid()}"  # its parent, alive: it keeps going
    out = subprocess.run([sys.executable, "-c", code], env=env, timeout=30, capture_output=True, text=True)
    assert out.returncode == 0 and "alive" in out.stdout


@pytest.mark.slow
def test_workers_on_two_machines_share_an_mlflow_server(postgres_url, tmp_path):
    """Two machines, simulated by two folders with nothing in common but the URLs: the same
    `aepipe tune` command on each, an `mlflow server` (PostgreSQL backend store, artifacts served
    by it) for tracking, PostgreSQL for the study. Everything lands on the server."""
    import psycopg

    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE DATABASE mlflow_multi")
    port = free_port()
    log = open(tmp_path / "server.log", "w")  # a file, not a pipe: the server logs every request
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               postgres_url.rsplit("/", 1)[0] + "/mlflow_multi", "--serve-artifacts",
                               "--artifacts-destination", str(tmp_path / "server-artifacts"), "-h", "127.0.0.1",
                               "-p", str(port), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", server, log=tmp_path / "server.log")
        procs = []
        for machine in ("a", "b"):
            folder = tmp_path / machine
            folder.mkdir()
            env = {**_env(folder / "mlruns"), "MLFLOW_TRACKING_URI": uri, "AEPIPE_STORAGE": postgres_url}
            procs.append(subprocess.Popen([*CLI, "tune", str(PIPELINES / "vanilla.toml"), "--study", "two-machines",
                                           "--n-trials", "4", "--set", "tune.pruner=none", *FAST], cwd=folder, env=env,
                                           text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, err[-3000:]
        for machine in ("a", "b"):  # no machine kept a store of its own
            assert not (tmp_path / machine / "mlruns" / "mlflow.db").exists()
            assert not list((tmp_path / machine).rglob("*.pt")), "checkpoints go to the server once a run ends"

        from mlflow import MlflowClient

        study = _load("two-machines", postgres_url)
        parent = study.user_attrs["aepipe.mlflow_parent_run_id"]
        assert all(f"MLflow parent run {parent}" in err for _, err in outs)
        client = MlflowClient(tracking_uri=uri)
        children = client.search_runs([client.get_run(parent).info.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{parent}'")
        assert sorted(int(r.data.tags["aepipe.trial"]) for r in children) == list(range(4))
        assert all(r.info.status == "FINISHED" for r in children)
        parent_run = client.get_run(parent)
        assert parent_run.info.status == "FINISHED" and parent_run.data.tags["best.trial"] == str(
            study.best_trial.number
        )
        assert len({t.user_attrs["aepipe.worker"] for t in study.trials}) == 2  # both machines ran trials
        assert "checkpoint/checkpoint.pt" in {
            a.path for a in client.list_artifacts(children[0].info.run_id, "checkpoint")
        }
        best = study.best_trial.user_attrs["aepipe.mlflow_run_id"]
        assert [v.run_id for v in client.search_model_versions("name = 'two-machines'")] == [best]
        # a third machine uses the registered model with nothing but the server's URL
        code = f"""
import mlflow.pyfunc, numpy as np
mlflow.set_tracking_uri({uri!r})
model = mlflow.pyfunc.load_model("models:/two-machines/1")
print(model.predict(np.full((2, 64), 8.0)).shape)
"""
        third = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                               env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
        code_dim = study.best_trial.params["model.code_dim"]
        assert third.returncode == 0 and third.stdout.strip() == f"(2, {code_dim})", third.stderr[-2000:]
        # one command recorded the results; the other said so
        assert sum("records the results" in err for _, err in outs) == 1
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        log.close()


def test_results_recorded_twice_at_once_leave_one_model_version(aepipe_pm, home, monkeypatch):
    """Two commands finishing a shared study together: a refused write is tried again, and a
    model registered twice keeps one version."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from aepipe import tune as tuning
    from aepipe.config import resolve
    from aepipe.training import train

    monkeypatch.setattr(tuning.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise MlflowException("duplicate key value violates unique constraint")
        return "written"

    assert tuning.retrying(flaky, MlflowException) == "written" and len(calls) == 3
    with pytest.raises(MlflowException):
        tuning.retrying(lambda: (_ for _ in ()).throw(MlflowException("still refused")), MlflowException)

    result = train(resolve(aepipe_pm, PIPELINES / "vanilla.toml", ["train.epochs=1", "tracking.log_images=false",
                                                                    "tracking.log_dataset=false"]), aepipe_pm)
    for _ in range(2):  # what two racing commands leave behind
        mlflow.register_model(f"runs:/{result.run_id}/pyfunc", "raced")
    from aepipe.tracking import default_tracker

    default_tracker().drop_duplicate_versions("raced", result.run_id)
    assert [int(v.version) for v in MlflowClient().search_model_versions("name = 'raced'")] == [1]


@pytest.mark.parametrize("name", ["o'neil", "Ünïcödé 研究 \"quoted\""])
def test_study_names_are_data(home, tmp_path, name):
    """A study named with quotes or any Unicode works in `tune` (pruned trials included), its
    summary, `compare` and the registry: no filter is built by pasting the name."""
    from click.testing import CliRunner

    from aepipe.cli import cli

    path = _write(tmp_path, """
        variant = "vanilla"
        [train]
        epochs = 6
        patience = 0
        [tracking]
        experiment = "names"
        log_images = false
        log_dataset = false
        [tune]
        n_trials = 5
        sampler = "random"
        pruner = "median"
        warmup_epochs = 1
        [tune.space]
        "train.lr" = { type = "float", low = 1e-5, high = 3e-2, log = true }
    """)
    out = _tune_here(str(path), "--study", name, "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["study"] == name and sum(summary["states"].values()) == 5
    shown = _tune_here(str(path), "--study", name, "--summary", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["best"] == summary["best"]
    compared = CliRunner().invoke(cli, ["compare", name, "--format", "csv"])
    assert compared.exit_code == 0, compared.output
    import csv
    import io

    row = next(csv.DictReader(io.StringIO(compared.stdout)))
    assert row["variant"] == f"vanilla (study {name})" and row["run_id"] == summary["best"][0]["run_id"]
    client = _client(home)
    versions = [v for v in client.search_model_versions(max_results=1000) if v.name == name]
    assert [v.run_id for v in versions] == [summary["best"][0]["run_id"]]
    tagged = [r for r in client.search_runs([client.get_experiment_by_name("names").experiment_id])
              if r.data.tags.get("aepipe.study") == name and r.data.tags.get("aepipe.role") != "study"]
    assert len(tagged) == 5 and all(r.info.status != "RUNNING" for r in tagged)


def _long_study(tmp_path: Path, experiment: str) -> Path:
    """A 2-trial study (one per worker) whose trials train long enough to be stopped mid-trial: 20,000 epochs (400
    took only seconds, and under load a trial could finish before the test stopped it)."""
    return _write(tmp_path, f"""
        variant = "vanilla"
        [train]
        epochs = 20000
        patience = 0
        [tracking]
        experiment = "{experiment}"
        log_model = false
        log_images = false
        log_dataset = false
        [tune]
        study = "t"
        n_trials = 2
        sampler = "random"
        pruner = "none"
        [tune.space]
        "train.lr" = {{ type = "float", low = 1e-4, high = 1e-2, log = true }}
    """)


def _training_workers(storage: str, want: int = 2, timeout: float = 120) -> set[int]:
    """The pids of the workers whose trials have started their runs, once there are ``want``."""
    from optuna.trial import TrialState

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            trials = _load("t", storage).trials
        except Exception:  # noqa: BLE001 - not created yet
            continue
        workers = {int(t.user_attrs["aepipe.worker"].rsplit(":", 1)[1]) for t in trials
                   if t.state == TrialState.RUNNING and "aepipe.mlflow_run_id" in t.user_attrs}
        if len(workers) >= want:
            return workers
    raise AssertionError(f"{want} workers never trained at once")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_stops_a_study_and_the_same_command_completes_it(home, tmp_path, how):
    """Ctrl-C to `aepipe tune` (the terminal signals the command and its workers), or SIGTERM to
    the command alone (a scheduler's): every worker stops within seconds, the trials' runs and
    the study's parent run are KILLED, nothing is left RUNNING, and the same command again
    completes the study to exactly n_trials on the same parent run."""
    from optuna.trial import TrialState

    path = _long_study(tmp_path, "stopped")
    proc = subprocess.Popen([*CLI, "tune", str(path), "--n-workers", "2"], env=_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    storage = f"journal:///{home / 'optuna.journal'}"
    children = _training_workers(storage) - {proc.pid}
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    for child in children:  # gone with their command
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    assert proc.returncode == 130, err[-3000:]
    assert "run the same `aepipe tune` command again to continue the study" in err
    client = _client(home)
    exp = client.get_experiment_by_name("stopped").experiment_id
    runs = client.search_runs([exp])
    assert runs and all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    parent = _load("t", storage).user_attrs["aepipe.mlflow_parent_run_id"]
    assert client.get_run(parent).info.status == "KILLED"
    trials = [client.get_run(r.info.run_id) for r in runs if r.info.run_id != parent]
    assert sum(r.info.status == "KILLED" for r in trials) == 2, (
        [(r.info.run_name, r.info.status, r.data.tags.get("aepipe.error")) for r in trials], err[-3000:])

    again = _tune_here(str(path), "--set", "train.epochs=5")  # no process of its own needed: in this one
    assert again.returncode == 0, again.stderr[-3000:]
    study = _load("t", storage)
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 2
    assert (
        study.user_attrs["aepipe.mlflow_parent_run_id"] == parent and client.get_run(parent).info.status == "FINISHED"
    )
    assert all(r.info.status != "RUNNING" for r in client.search_runs([exp]))


@pytest.mark.slow
def test_a_killed_command_stops_its_workers_and_running_it_again_heals_the_study(home, tmp_path):
    """SIGKILL of `aepipe tune` itself: its worker notices within seconds and stops (its run
    KILLED); the same command again ends the dead command's run, completes the study to exactly
    n_trials and leaves no run RUNNING."""
    from optuna.trial import TrialState

    path = _long_study(tmp_path, "killed")
    proc = subprocess.Popen([*CLI, "tune", str(path), "--n-workers", "2"], env=_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers = _training_workers(f"journal:///{home / 'optuna.journal'}")
    storage = f"journal:///{home / 'optuna.journal'}"
    proc.kill()
    proc.wait(timeout=30)
    child = next(pid for pid in workers if pid != proc.pid)
    stopped = time.time() + 20
    while time.time() < stopped:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the worker outlived its command by 20 s")

    again = _tune_here(str(path), "--set", "train.epochs=5")  # no process of its own needed: in this one
    assert again.returncode == 0, again.stderr[-3000:]
    assert "run(s) left RUNNING by a process that died marked KILLED" in again.stderr
    study = _load("t", storage)
    assert len([t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 2
    client = _client(home)
    runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert sum(r.info.status == "KILLED" for r in runs) >= 2  # the command's own trial and its worker's


def test_a_stop_while_a_trial_finishes_stops_the_worker_before_the_next(aepipe_pm, aepipe_plugin, home, tmp_path):
    """Ctrl-C that lands while a trial is finishing (its test evaluation, its figures): the trial
    completes, and the worker stops instead of starting the next one."""
    import types

    from aepipe import hookimpl
    from aepipe import tune
    from aepipe.training import Interrupted

    plugin = types.ModuleType("late_sigint")
    plugin.aepipe_run_end = hookimpl(lambda run, metrics: os.kill(os.getpid(), signal.SIGINT))
    aepipe_plugin(plugin, name="late_sigint")
    path = _write(tmp_path, """
        variant = "vanilla"
        [train]
        epochs = 2
        [tracking]
        log_model = false
        log_images = false
        log_dataset = false
        [tune]
        n_trials = 3
        pruner = "none"
        [tune.space]
        "train.lr" = { type = "float", low = 0.001, high = 0.01 }
    """)
    st = tune.prepare_study(aepipe_pm, path)
    tune.open_study(st, epochs=2)
    tune.ensure_parent_run(st)
    with pytest.raises(
        Interrupted, match=r"stopped by SIGINT between trials; run the same `aepipe tune` command again"
    ):
        tune.run_worker(aepipe_pm, st, echo=lambda line: None)
    assert [t.state.name for t in st.study.trials] == ["COMPLETE"]


def test_a_worker_waits_for_trials_running_elsewhere_briefly_at_first(aepipe_pm, home, tmp_path, monkeypatch):
    """With the study's last trial running in another live worker, a worker looks again after
    0.05 s, then twice as long each time up to its ``poll``; it ends once that trial finishes."""
    import socket

    from aepipe import tune
    from aepipe.tune import worker

    path = _write(tmp_path, """
        variant = "vanilla"
        [tune]
        n_trials = 1
        [tune.space]
        "train.lr" = { type = "float", low = 0.001, high = 0.01 }
    """)
    st = tune.prepare_study(aepipe_pm, path)
    tune.open_study(st, epochs=2)
    elsewhere = st.study.ask()
    elsewhere.set_user_attr(tune.WORKER_ATTR, f"{socket.gethostname()}:{os.getppid()}")  # a live process
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 8:
            st.study.tell(elsewhere, 1.0)

    monkeypatch.setattr(worker.time, "sleep", sleep)
    assert tune.run_worker(aepipe_pm, st, poll=1.0, echo=lambda line: None) == {"complete": 0, "pruned": 0, "failed": 0}
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_a_command_that_fails_after_starting_its_workers_stops_them(aepipe_pm, home, monkeypatch):
    """A command starts its child workers as soon as the study is open (their start-up overlaps
    its own); if it then fails (here: its parent run cannot be made), they are stopped too."""
    import aepipe
    from aepipe import tune
    from aepipe.errors import AepipeError
    from aepipe.tune import supervise

    stopped = []
    real = supervise.stop_children
    monkeypatch.setattr(
        supervise, "stop_children", lambda procs, grace=30.0: stopped.extend(procs) or real(procs, grace)
    )
    monkeypatch.setattr(tune, "ensure_parent_run", lambda st: (_ for _ in ()).throw(AepipeError("no parent run")))
    with pytest.raises(AepipeError, match="no parent run"):
        aepipe.run_study(PIPELINES / "vanilla.toml", n_trials=2, n_workers=2, echo=lambda line: None, pm=aepipe_pm)
    assert len(stopped) == 1 and stopped[0].poll() is not None  # the child was started, and is gone
