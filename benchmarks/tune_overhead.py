"""What `aepipe tune` costs against a hand-written Optuna study of the same trials (issue 22).

The study: one worker, a one-layer 64-32-64 autoencoder on scikit-learn's digits (aepipe's
``vanilla`` variant), 12 trials of 10 epochs, batch 64, Adam, random sampler (seed 0) over
``train.lr`` and ``model.code_dim``, no pruning. Each round runs, alternately, in fresh
processes (both pay their interpreter start and imports):

1. ``aepipe tune`` with one worker, in a fresh temporary AEPIPE_HOME;
2. a hand-written Optuna study: a ~30-line PyTorch loop on the same data split, model, batch
   size, epochs, optimizer and search space (:data:`HAND_LOOP`, :data:`HAND_STUDY`);
3. the same hand-written study tracked by ``optuna-integration``'s ``MLflowCallback``
   (:data:`HAND_MLFLOW_STUDY`: one MLflow run per trial with its parameters and value, and each
   epoch's training and validation loss, into a fresh SQLite store; ``pip install
   aepipe[bench]``; ``--no-mlflow-callback`` skips it);
4. ``aepipe tune --n-workers 2`` in another fresh AEPIPE_HOME.

Reported: the median wall time of each over ``--rounds``, the ratio aepipe/hand, seconds per
trial, and aepipe's per-trial cost beyond training, read from the trial runs in the MLflow store
(run end - run start - ``train_seconds``) and from the whole command (wall / trials - training).

Targets: ``aepipe tune`` <= 1.0x the study tracked by MLflowCallback and <= 2.0x the untracked
one (issue 35; issue 22's was <= 1.3x the untracked one); two workers on two cores no slower
than one.

    python benchmarks/tune_overhead.py [--rounds 3] [--n-trials 12] [--epochs 10] [--threads 1] [--ablate] \
        [--phases] [--json out.json]

On a busy 2-core machine torch's default two threads stall on these tiny models (training took
10-20x longer than with one, for both sides, and varied 5x between rounds); ``--threads 1`` sets
OMP_NUM_THREADS=1 for every process measured (``--n-workers 2`` gives each worker one thread
anyway). ``--phases`` then times one more one-worker study phase by phase. ``--ablate`` then runs the
one-worker study once per tracking switch turned off
(figures, model, dataset, all three) to attribute the per-trial cost.

aepipe is used only through its command line; the MLflow store is read with ``mlflow``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the hand-written training loop, shared with ``fixed_cost.py --against-hand``: the digits split
#: as aepipe splits them by default (20% test, 10% validation), the vanilla autoencoder (sigmoid
#: code layer, Bernoulli loss summed over pixels, averaged over the batch), Adam.
HAND_LOOP = r'''
import time
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from sklearn.datasets import load_digits


def load_data(seed=0):
    x = load_digits().data.astype("float32") / 16.0
    idx = np.random.default_rng(seed).permutation(len(x))
    n_test, n_val = int(0.2 * len(x)), int(0.1 * len(x))
    parts = idx[n_test + n_val:], idx[n_test:n_test + n_val], idx[:n_test]
    return [torch.from_numpy(x[p]) for p in parts]


def loss_of(model, x):
    return F.binary_cross_entropy_with_logits(model(x), x, reduction="none").sum(1).mean()


def fit(train, val, code_dim, lr, epochs, batch_size, seed=0, on_epoch=None):
    """Train; returns the model, the best validation loss and the seconds spent in epochs."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, code_dim), nn.Sigmoid(), nn.Linear(code_dim, 64))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, seconds = float("inf"), 0.0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for b in torch.randperm(len(train)).split(batch_size):
            loss = loss_of(model, train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        model.eval()
        with torch.no_grad():
            val_loss = loss_of(model, val).item()
        seconds += time.perf_counter() - t0
        best = min(best, val_loss)
        if on_epoch is not None:
            on_epoch(epoch, {"train_loss": total / len(train), "val_loss": val_loss})
    return model, best, seconds
'''

#: the hand-written study: argv = n_trials epochs
HAND_STUDY = HAND_LOOP + r'''
import json, sys
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
n_trials, epochs = int(sys.argv[1]), int(sys.argv[2])
train, val, test = load_data()
spent = []


def objective(trial):
    lr = trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    code_dim = trial.suggest_int("model.code_dim", 8, 64, log=True)
    _, best, seconds = fit(train, val, code_dim, lr, epochs, 64)
    spent.append(seconds)
    return best


study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
study.optimize(objective, n_trials=n_trials)
print(json.dumps({"train_seconds": sum(spent), "best": study.best_value}))
'''

#: the hand-written study tracked with optuna-integration's ``MLflowCallback`` (argv = n_trials
#: epochs tracking_uri): one MLflow run per trial (its parameters, its value, Optuna's tags) and,
#: through ``track_in_mlflow``, each epoch's training and validation loss; the store is a SQLite
#: file, as aepipe's default store is
HAND_MLFLOW_STUDY = HAND_LOOP + r'''
import json, sys, warnings
import mlflow
import optuna
from optuna_integration.mlflow import MLflowCallback

warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)
n_trials, epochs, uri = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
train, val, test = load_data()
spent = []
tracking = MLflowCallback(tracking_uri=uri, metric_name="val_loss")


def log_epoch(epoch, metrics):
    mlflow.log_metrics(metrics, step=epoch)


@tracking.track_in_mlflow()
def objective(trial):
    lr = trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    code_dim = trial.suggest_int("model.code_dim", 8, 64, log=True)
    _, best, seconds = fit(train, val, code_dim, lr, epochs, 64, on_epoch=log_epoch)
    spent.append(seconds)
    return best


study = optuna.create_study(study_name="tune-overhead", direction="minimize",
                            sampler=optuna.samplers.RandomSampler(seed=0))
study.optimize(objective, n_trials=n_trials, callbacks=[tracking])
print(json.dumps({"train_seconds": sum(spent), "best": study.best_value}))
'''

PIPELINE = """
variant = "vanilla"
[data]
name = "digits"
[model]
code_dim = 32
[train]
epochs = {epochs}
batch_size = 64
lr = 3e-3
[tracking]
experiment = "tune-overhead"
[tune]
n_trials = {n_trials}
sampler = "random"
seed = 0
pruner = "none"
metric = "val_loss"
direction = "minimize"
[tune.space]
"train.lr" = {{ type = "float", low = 1e-4, high = 1e-2, log = true }}
"model.code_dim" = {{ type = "int", low = 8, high = 64, log = true }}
"""


#: one ``aepipe tune`` in this process with the wall time of its phases (argv: the pipeline file):
#: aepipe's functions wrapped with a timer (no profiler, which inflates Python-heavy code); printed
#: as JSON, seconds by phase
PHASES = r"""
import json, sys, time
T0 = time.perf_counter()
import aepipe.cli as cli
import aepipe.plugins, aepipe.tracking.health, aepipe.tracking.store, aepipe.training.loop, aepipe.tune
import aepipe.tune.record, aepipe.usecases.tune

spent = {"imports (aepipe, torch: the timed modules)": time.perf_counter() - T0}


def timed(module, name, label):
    inner = getattr(module, name)
    spent[label] = 0.0  # shown in this order

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
    setattr(module, name, wrapper)


timed(aepipe.tracking.health, "check_writable", "store set-up (MLflow imported, store opened)")
timed(aepipe.plugins, "get_plugin_manager", "plugin manager")
timed(aepipe.usecases.tune, "open_pipeline_study", "Optuna study opened")
timed(aepipe.tune, "ensure_parent_run", "the study's parent run")
timed(aepipe.tune, "run_worker", "the trials (the worker's loop)")
timed(aepipe.training.loop, "train", "  of which the trial runs (train())")
timed(aepipe.tune, "finish", "the results (plots, best trial, registry)")
timed(aepipe.tune.record, "log_best_artifacts", "  of which the best trial's figures, model, dataset")
cli.os._exit = lambda code: (_ for _ in ()).throw(SystemExit(code))  # time the process, not its teardown
sys.argv = ["aepipe", "tune", sys.argv[1], "--study", "bench"]
try:
    cli.main()
except SystemExit:
    pass
total = time.perf_counter() - T0
spent["the rest (the command parsed, output)"] = total - sum(v for k, v in spent.items() if not k.startswith("  "))
spent["total"] = total
print(json.dumps(spent))
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    for key in ("MLFLOW_TRACKING_URI", "AEPIPE_STORAGE"):
        env.pop(key, None)
    return env


def trial_costs(home: Path, study: str) -> list[tuple[float, float, float, float]]:
    """(run seconds, train_seconds, start, end) of each finished trial run of ``study`` in the
    store, in the order they started (start and end in seconds of the epoch)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune-overhead")
    runs = client.search_runs([experiment.experiment_id], f"tags.`aepipe.study` = '{study}'", max_results=1000)
    out = []
    for run in runs:
        seconds = run.data.metrics.get("train_seconds")
        if seconds is not None and run.info.end_time:
            out.append(((run.info.end_time - run.info.start_time) / 1000, seconds, run.info.start_time / 1000,
                        run.info.end_time / 1000))
    return sorted(out, key=lambda row: row[2])


def aepipe_tune(n_trials: int, epochs: int, workers: int, sets: tuple[str, ...] = ()) -> dict:
    home = Path(tempfile.mkdtemp(prefix="aepipe-tune-overhead-"))
    try:
        path = home / "study.toml"
        path.write_text(PIPELINE.format(n_trials=n_trials, epochs=epochs))
        env = clean_env(AEPIPE_HOME=str(home))
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "aepipe.cli", "tune", str(path), "--study", "bench",
                              "--n-trials", str(n_trials), "--n-workers", str(workers), "--json",
                              *(a for kv in sets for a in ("--set", kv))],
                             env=env, cwd=home, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode:
            sys.exit(f"aepipe tune failed ({out.returncode}):\n{out.stderr[-3000:]}")
        states = json.loads(out.stdout)["states"]
        runs = trial_costs(home, "bench")
        gaps = [b[2] - a[3] for a, b in zip(runs, runs[1:])]  # one trial run's end to the next one's start
        return {"wall": wall, "states": states, "trials": len(runs),
                "train_seconds": sum(row[1] for row in runs),
                "run_seconds": sum(row[0] for row in runs),
                "beyond_training_in_run": statistics.median(row[0] - row[1] for row in runs) if runs else float("nan"),
                "between_runs": statistics.median(gaps) if gaps else float("nan"),
                "outside_runs": wall - (runs[-1][3] - runs[0][2]) if runs else float("nan")}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def phases(n_trials: int, epochs: int) -> dict[str, float]:
    """Where one worker's ``aepipe tune`` spends its wall time (:data:`PHASES`), in a fresh store."""
    home = Path(tempfile.mkdtemp(prefix="aepipe-tune-overhead-"))
    try:
        path = home / "study.toml"
        path.write_text(PIPELINE.format(n_trials=n_trials, epochs=epochs))
        out = subprocess.run([sys.executable, "-c", PHASES, str(path)], env=clean_env(AEPIPE_HOME=str(home)), cwd=home,
                             capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"aepipe tune (phases) failed ({out.returncode}):\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(home, ignore_errors=True)


def hand_study(n_trials: int, epochs: int, mlflow_callback: bool = False) -> dict:
    """The hand-written study, untracked or (``mlflow_callback``) tracked by ``MLflowCallback``
    into a fresh SQLite store."""
    home = Path(tempfile.mkdtemp(prefix="aepipe-tune-overhead-hand-"))
    try:
        script, extra = ((HAND_MLFLOW_STUDY, [f"sqlite:///{home / 'mlflow.db'}"]) if mlflow_callback
                         else (HAND_STUDY, []))
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", script, str(n_trials), str(epochs), *extra],
                             env=clean_env(), cwd=home, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if out.returncode:
        sys.exit(f"hand-written study failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall": wall, "train_seconds": result["train_seconds"], "best": result["best"]}


ABLATIONS = {
    "no figures": ("tracking.log_images=false",),
    "no model": ("tracking.log_model=false",),
    "no dataset": ("tracking.log_dataset=false",),
    "none of the three": ("tracking.log_images=false", "tracking.log_model=false", "tracking.log_dataset=false"),
}


def ablate(n_trials: int, epochs: int, wall: float, in_run: float) -> dict:
    """One worker's study once per switch turned off: what each saves per trial, in the trial
    run (MLflow start..end less train_seconds) and in the whole command's wall time."""
    print(f"one run each, against the median above (wall {wall:.2f}s, {in_run:.2f}s per trial run beyond training):")
    out = {}
    for label, sets in ABLATIONS.items():
        row = aepipe_tune(n_trials, epochs, 1, sets)
        saved_run, saved_wall = in_run - row["beyond_training_in_run"], (wall - row["wall"]) / n_trials
        print(f"  {label:18s} wall {row['wall']:7.2f}s  per trial run beyond training "
              f"{row['beyond_training_in_run']:5.2f}s  saves {saved_run:5.2f}s/trial in the run, "
              f"{saved_wall:5.2f}s/trial of wall")
        out[label] = {**row, "saved_per_trial_run": saved_run, "saved_per_trial_wall": saved_wall}
    return out


def parse_with_threads(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse ``parser``'s options plus ``--threads``, which sets OMP_NUM_THREADS for every process
    measured (shared with ``fixed_cost.py``)."""
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every process measured (default: unset, torch's own choice); 1 keeps "
                             "tiny models from stalling on a busy machine's other core")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--no-workers", action="store_true", help="skip the --n-workers 2 study")
    parser.add_argument("--no-mlflow-callback", action="store_true",
                        help="skip the hand-written study tracked by optuna-integration's MLflowCallback")
    parser.add_argument("--ablate", action="store_true",
                        help="then one aepipe tune per tracking switch turned off, to attribute the per-trial cost")
    parser.add_argument("--phases", action="store_true", help="then one aepipe tune timed phase by phase")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parse_with_threads(parser)
    n = args.n_trials
    rows: dict[str, list[dict]] = {"aepipe": [], "hand": [], "hand-mlflow": [], "aepipe-2w": []}
    for r in range(args.rounds):
        rows["aepipe"].append(aepipe_tune(n, args.epochs, 1))
        rows["hand"].append(hand_study(n, args.epochs))
        if not args.no_mlflow_callback:
            rows["hand-mlflow"].append(hand_study(n, args.epochs, mlflow_callback=True))
        if not args.no_workers:
            rows["aepipe-2w"].append(aepipe_tune(n, args.epochs, 2))
        shown = "  ".join(f"{k} {v[-1]['wall']:.1f}s" for k, v in rows.items() if v)
        print(f"round {r + 1}: {shown}", file=sys.stderr)

    def med(name: str, key: str) -> float:
        return statistics.median(row[key] for row in rows[name])

    print(f"{n} trials x {args.epochs} epochs, median of {args.rounds} round(s); cores {os.cpu_count()}, "
          f"OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}, load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':26s} {'wall s':>8s} {'s/trial':>8s} {'train s':>8s} {'(wall-train)/trial s':>21s}")
    result: dict = {"n_trials": n, "epochs": args.epochs, "rounds": args.rounds, "cores": os.cpu_count(),
                    "threads": args.threads, "loadavg": os.getloadavg(), "raw": rows}
    for name, label in (
        ("hand", "hand-written Optuna"),
        ("hand-mlflow", "hand + MLflowCallback"),
        ("aepipe", "aepipe tune"),
        ("aepipe-2w", "aepipe tune --n-workers 2"),
    ):
        if not rows[name]:
            continue
        wall, trained = med(name, "wall"), med(name, "train_seconds")
        per_trial = (wall - trained) / n
        print(f"{label:26s} {wall:8.2f} {wall / n:8.2f} {trained:8.2f} {per_trial:21.2f}")
        result[name] = {"wall": wall, "per_trial": wall / n, "train_seconds": trained,
                        "beyond_training_per_trial": per_trial}
    in_run = med("aepipe", "beyond_training_in_run")
    ratio = med("aepipe", "wall") / med("hand", "wall")
    result.update(ratio=ratio, beyond_training_in_trial_run=in_run)
    print(f"aepipe, one worker: a trial run (MLflow start..end) beyond its train_seconds: median {in_run:.2f}s; "
          f"between two trial runs: {med('aepipe', 'between_runs'):.2f}s; before the first and after the last "
          f"(start-up, study set-up, results): {med('aepipe', 'outside_runs'):.2f}s")
    result.update(between_runs=med("aepipe", "between_runs"), outside_runs=med("aepipe", "outside_runs"))
    print(f"ratio aepipe tune / untracked hand-written study: {ratio:.2f} (target <= 2.0; issue 22's was <= 1.3)")
    if rows["hand-mlflow"]:
        tracked = med("aepipe", "wall") / med("hand-mlflow", "wall")
        per_round = [a["wall"] / h["wall"] for a, h in zip(rows["aepipe"], rows["hand-mlflow"])]
        result.update(ratio_mlflow_callback=tracked, ratio_mlflow_callback_rounds=per_round)
        print(f"ratio aepipe tune / hand-written study with MLflowCallback: {tracked:.2f} (target <= 1.0; rounds "
              f"{', '.join(f'{r:.2f}' for r in per_round)})")
    if rows["aepipe-2w"]:
        two = med("aepipe-2w", "wall") / med("aepipe", "wall")
        result["ratio_two_workers"] = two
        print(f"ratio 2 workers / 1 worker: {two:.2f} (target <= 1.0)")
    if args.ablate:
        result["ablate"] = ablate(n, args.epochs, result["aepipe"]["wall"], in_run)
    if args.phases:
        result["phases"] = phases(n, args.epochs)
        print("one worker's aepipe tune, phase by phase (wall seconds, one run):")
        for label, seconds in result["phases"].items():
            print(f"  {label:55s} {seconds:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
