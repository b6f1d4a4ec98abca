"""What an `aepipe train` process costs beyond its training: the whole command, and where it goes.

Target (issue 11): a warm-store `aepipe train pipelines/vanilla.toml` (20 epochs) costs at most
5 s beyond its own ``train_seconds`` on the 2-core machine.

1. The command as a user runs it, ``--rounds`` times on a store that already exists (the first
   run creates it and is not counted): wall time, ``train_seconds`` and the difference.
2. The same work phase by phase in one fresh process (``--breakdown``), with the real functions
   the command calls, so the difference can be attributed.
3. ``--against-hand`` (issue 22, target: aepipe's fixed cost <= 0.5x the hand script's): instead
   of 1 and 2, alternately ``--rounds`` times, (a) the whole command less its ``train_seconds``
   and (b) a hand-tracked script: the loop of ``tune_overhead.py`` plus MLflow parameters,
   per-epoch metrics, test metrics and ``mlflow.pytorch.log_model`` in a SQLite store, less its
   own training seconds; both in a fresh store each round (``--store warm``: a store each made
   once, before the rounds). Then which top-level packages the command's imports go to, from
   ``python -X importtime -m aepipe.cli train ...`` (aepipe only through its command line).

    python benchmarks/fixed_cost.py [--rounds 3]
    python benchmarks/fixed_cost.py --against-hand [--rounds 3] [--store fresh|warm] [--threads 1] [--json out.json]

On a busy 2-core machine, ``--threads 1`` (OMP_NUM_THREADS for both) keeps torch's second thread
from stalling these tiny models: ``train_seconds`` varied 5x between rounds without it.
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

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["-m", "aepipe.cli", "train", str(ROOT / "pipelines" / "vanilla.toml"), "--set", "train.epochs=20", "--json",
           "-q"]


def whole_command(rounds: int, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, *COMMAND], env=env, check=True, capture_output=True)  # creates the store
    rows = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, *COMMAND], env=env, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        train_seconds = json.loads(out.stdout)["metrics"]["train_seconds"]
        rows.append((wall, train_seconds, wall - train_seconds))
    for wall, trained, extra in rows:
        print(f"  wall {wall:6.2f}s  train_seconds {trained:5.2f}s  beyond training {extra:5.2f}s")
    print(f"median beyond training: {statistics.median(r[2] for r in rows):.2f}s")


BREAKDOWN = r"""
import time, sys
t = [("python start", time.perf_counter())]
def mark(name): t.append((name, time.perf_counter()))
import aepipe.cli; mark("import aepipe.cli (click, pluggy)")
from aepipe.plugins import get_plugin_manager
pm = get_plugin_manager(); mark("plugin manager (entry points)")
from aepipe.config import resolve
p = resolve(pm, sys.argv[1], ["train.epochs=20"]); mark("resolve the pipeline (imports torch and components)")
from aepipe.training import loop
from aepipe.tracking import default_tracker
tracker = default_tracker(); mark("tracker: import mlflow, open the store")
import torch
from aepipe.training.device import select_device, seed_everything
from aepipe.training.setup import first_step_check, load_data, make_optimizer
from aepipe.model import build_model, check_model_fits
device = select_device("auto"); seed_everything(0)
data = load_data(p, device); mark("load the dataset")
check_model_fits(p, data, device); model = build_model(p, data); mark("size on the meta device, build the model once")
optimizer = make_optimizer(model.parameter_groups(), "adam", 1e-3, 0.0)
mark("first optimizer (torch imports its compiler)")
first_step_check(model, optimizer, data, 64, ""); mark("first-step check (and the model restored)")
result = loop.train(p, pm, tracker=tracker); mark("the run: start, 20 epochs, test, figures, model, end")
print(f"  of which train_seconds: {result.metrics['train_seconds']:.2f}s")
prev = t[0][1]
for name, at in t[1:]:
    print(f"  {name:55s} {at - prev:6.2f}s"); prev = at
"""


def breakdown(env: dict[str, str]) -> None:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    print(f"  python interpreter start and exit                        {time.perf_counter() - t0:6.2f}s")
    done = subprocess.run([sys.executable, "-c", BREAKDOWN, str(ROOT / "pipelines" / "vanilla.toml")], env=env)
    if done.returncode:  # it calls aepipe's internal functions by name: say so, rather than hide the figures above
        print(f"  (the breakdown failed, exit {done.returncode}: it imports aepipe's internals, see the error above)")


HAND_TRACKED = r"""
import json, sys, tempfile
import mlflow
import mlflow.pytorch

mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("hand")
epochs, code_dim, lr, batch_size = int(sys.argv[2]), 32, 3e-3, 64
train, val, test = load_data()
with mlflow.start_run():
    mlflow.log_params({"epochs": epochs, "code_dim": code_dim, "lr": lr, "batch_size": batch_size, "optimizer": "adam"})
    model, best, seconds = fit(train, val, code_dim, lr, epochs, batch_size,
                               on_epoch=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch))
    with torch.no_grad():
        mlflow.log_metrics({"test_loss": loss_of(model, test).item(), "best_val_loss": best, "train_seconds": seconds})
    mlflow.pytorch.log_model(model, name="model", input_example=test[:5].numpy())
print(json.dumps({"train_seconds": seconds}))
"""


def hand_tracked_script() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tune_overhead import HAND_LOOP

    return HAND_LOOP + HAND_TRACKED


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time of a whole process and the ``train_seconds`` in the JSON it prints last."""
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"{' '.join(argv[:4])} ... failed ({out.returncode}):\n{out.stderr[-3000:]}")
    text = out.stdout.strip()
    try:  # aepipe's --json document, or the hand script's last line
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = json.loads(text.splitlines()[-1])
    return wall, doc.get("metrics", doc)["train_seconds"]


def against_hand(rounds: int, store: str, epochs: int) -> dict:
    """Alternately: aepipe's command and the hand-tracked script, each less its training."""
    base = Path(tempfile.mkdtemp(prefix="aepipe-fixed-hand-"))
    script = hand_tracked_script()
    command = [*COMMAND[:-4], "--set", f"train.epochs={epochs}", "--json", "-q"]

    def aepipe_env(home: Path) -> dict[str, str]:
        env = {**os.environ, "AEPIPE_HOME": str(home)}
        env.pop("MLFLOW_TRACKING_URI", None)
        return env

    def hand(home: Path) -> tuple[float, float]:
        home.mkdir(parents=True, exist_ok=True)
        return timed(
            [sys.executable, "-c", script, f"sqlite:///{home / 'mlflow.db'}", str(epochs)], aepipe_env(home), home
        )

    def ours(home: Path) -> tuple[float, float]:
        home.mkdir(parents=True, exist_ok=True)
        return timed([sys.executable, *command], aepipe_env(home), home)

    try:
        if store == "warm":
            ours(base / "aepipe"), hand(base / "hand")
        rows: dict[str, list[tuple[float, float]]] = {"aepipe": [], "hand": []}
        for r in range(rounds):
            where = (lambda side: base / side) if store == "warm" else (lambda side: base / f"{side}-{r}")
            rows["aepipe"].append(ours(where("aepipe")))
            rows["hand"].append(hand(where("hand")))
        print(f"{epochs} epochs, {store} store, median of {rounds} round(s); OMP_NUM_THREADS "
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; load "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        result: dict = {"epochs": epochs, "store": store, "rounds": rounds, "loadavg": os.getloadavg(), "raw": rows}
        for side, label in (("aepipe", "aepipe train"), ("hand", "hand-tracked script")):
            wall = statistics.median(w for w, _ in rows[side])
            trained = statistics.median(t for _, t in rows[side])
            fixed = statistics.median(w - t for w, t in rows[side])
            result[side] = {"wall": wall, "train_seconds": trained, "fixed": fixed}
            print(f"  {label:20s} wall {wall:6.2f}s  train_seconds {trained:5.2f}s  beyond training {fixed:5.2f}s")
        result["ratio"] = result["aepipe"]["fixed"] / result["hand"]["fixed"]
        print(f"fixed cost ratio aepipe / hand: {result['ratio']:.2f} (target <= 0.5)")
        return result
    finally:
        shutil.rmtree(base, ignore_errors=True)


#: import-time buckets, most specific first: (prefix of the module name, bucket)
BUCKETS = [("torch._dynamo", "torch compiler"), ("torch._inductor", "torch compiler"),
           ("torch.compiler", "torch compiler"),
           ("torch._functorch", "torch compiler"), ("torch.fx", "torch compiler"), ("torch._export", "torch compiler"),
           ("torch.export", "torch compiler"), ("torch.onnx", "torch compiler"),
           ("torch._higher_order_ops", "torch compiler"),
           ("torch._subclasses", "torch compiler"), ("torch._prims", "torch compiler"),
           ("torch._refs", "torch compiler"),
           ("torch._decomp", "torch compiler"), ("sympy", "torch compiler (sympy)"),
           ("mpmath", "torch compiler (sympy)")]


def bucket(module: str) -> str:
    for prefix, name in BUCKETS:
        if module == prefix or module.startswith(prefix + "."):
            return name
    return module.split(".")[0]


def import_breakdown(epochs: int, top: int) -> dict:
    """``python -X importtime`` of the whole command: import time by the package aepipe imported
    (torch, mlflow, ...: with everything it pulled in) and by each package's own modules."""
    home = Path(tempfile.mkdtemp(prefix="aepipe-fixed-importtime-"))
    try:
        env = {**os.environ, "AEPIPE_HOME": str(home)}
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [sys.executable, "-X", "importtime", *COMMAND[:-4], "--set", f"train.epochs={epochs}", "--json", "-q"]
        t0 = time.perf_counter()
        out = subprocess.run(command, env=env, cwd=home, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode:
            sys.exit(f"aepipe train under -X importtime failed ({out.returncode}):\n{out.stderr[-3000:]}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    lines = []  # (depth, module, self seconds), children before their parent
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line[len("import time:"):].split("|", 2)
        module = name.strip()
        lines.append(((len(name) - len(name.lstrip()) - 1) // 2, module, int(self_us) / 1e6))
    own: dict[str, float] = {}  # each module's own time, by its top-level package
    via: dict[str, float] = {}  # ... and with what it pulled in, by the package aepipe imported
    chain: list[str] = []
    for depth, module, seconds in reversed(lines):  # a parent comes before its children, reversed
        del chain[depth:]
        chain.append(module)
        own[bucket(module)] = own.get(bucket(module), 0.0) + seconds
        outside = [m for m in chain if m.split(".")[0] not in ("aepipe", "aepipe_plugins")] or chain
        key = next((bucket(m) for m in outside if bucket(m).startswith("torch compiler")), bucket(outside[0]))
        via[key] = via.get(key, 0.0) + seconds
    train_seconds = json.loads(out.stdout)["metrics"]["train_seconds"]
    everything = sum(own.values())
    ranked = sorted(via.items(), key=lambda kv: -kv[1])
    print(f"imports of `aepipe train` (-X importtime, which slows imports itself): {everything:.2f}s of {wall:.2f}s "
          f"wall, train_seconds {train_seconds:.2f}s; by the package aepipe imports (with what it pulls in) and its "
          "own time")
    for name, seconds in ranked[:top]:
        print(f"  {name:28s} {seconds:6.2f}s  own {own.get(name, 0.0):6.2f}s")
    rest = sum(sec for _, sec in ranked[top:])
    print(f"  {'(the other ' + str(max(0, len(ranked) - top)) + ')':28s} {rest:6.2f}s")
    return {"wall": wall, "train_seconds": train_seconds, "imports": everything, "via": dict(ranked), "own": own}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--against-hand", action="store_true", help="aepipe train against the hand-tracked script, then its imports"
    )
    parser.add_argument("--store", choices=["fresh", "warm"], default="fresh",
                        help="--against-hand: a new store each round, or one each")
    parser.add_argument("--epochs", type=int, default=20, help="--against-hand: epochs of both")
    parser.add_argument("--top", type=int, default=12, help="--against-hand: packages listed in the import breakdown")
    parser.add_argument("--json", type=Path, default=None, help="--against-hand: also write the figures here")
    from tune_overhead import parse_with_threads

    args = parse_with_threads(parser)
    if args.against_hand:
        result = against_hand(args.rounds, args.store, args.epochs)
        result["import_breakdown"] = import_breakdown(args.epochs, args.top)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str))
        return
    env = {**os.environ, "AEPIPE_HOME": tempfile.mkdtemp(prefix="aepipe-fixed-")}
    env.pop("MLFLOW_TRACKING_URI", None)
    print(f"`aepipe train pipelines/vanilla.toml --set train.epochs=20` on a warm store ({env['AEPIPE_HOME']}):")
    whole_command(args.rounds, env)
    print("phase by phase, one process:")
    breakdown(env)


if __name__ == "__main__":
    main()
