"""What an `aepipe train` process costs beyond its training: the whole command, and where it goes.

Target (issue 11): a warm-store `aepipe train pipelines/vanilla.toml` (20 epochs) costs at most
5 s beyond its own ``train_seconds`` on the 2-core machine.

1. The command as a user runs it, ``--rounds`` times on a store that already exists (the first
   run creates it and is not counted): wall time, ``train_seconds`` and the difference.
2. The same work phase by phase in one fresh process (``--breakdown``), with the real functions
   the command calls, so the difference can be attributed.

    python benchmarks/fixed_cost.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["-m", "aepipe.cli", "train", str(ROOT / "pipelines" / "vanilla.toml"), "--set", "train.epochs=20", "--json", "-q"]


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
from aepipe.training.evaluate import load_data, make_optimizer, sanity_check
from aepipe.model import build_model
device = select_device("auto"); seed_everything(0)
data = load_data(p, device); mark("load the dataset")
sanity_check(build_model(p, data), data, 64, ""); model = build_model(p, data); mark("build the model, first-step check")
make_optimizer(model.model_parameters(), "adam", 1e-3, 0.0); mark("first optimizer (torch imports its compiler)")
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
    subprocess.run([sys.executable, "-c", BREAKDOWN, str(ROOT / "pipelines" / "vanilla.toml")], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "AEPIPE_HOME": tempfile.mkdtemp(prefix="aepipe-fixed-")}
    env.pop("MLFLOW_TRACKING_URI", None)
    print(f"`aepipe train pipelines/vanilla.toml --set train.epochs=20` on a warm store ({env['AEPIPE_HOME']}):")
    whole_command(args.rounds, env)
    print("phase by phase, one process:")
    breakdown(env)


if __name__ == "__main__":
    main()
