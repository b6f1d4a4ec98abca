"""Benchmark of `aepipe tune`: parallel workers and pruning.

1. The same study (one-layer 64-32-64 autoencoder on the digits, 24 trials, 60 epochs each,
   random sampler, no pruning) with --n-workers 1 and --n-workers 2: wall time of the
   whole command.
2. The same study (on the digits, 16 trials, 40 epochs, random sampler with one seed, so both
   draw the same settings in the same order) with the median pruner and without: epochs trained
   and the best validation loss.

    python benchmarks/tune_scaling.py

Each study runs in a fresh temporary AEPIPE_HOME; nothing is left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = """
variant = "vanilla"
[data]
name = "{data}"
[model]
code_dim = {code_dim}
[train]
epochs = {epochs}
batch_size = 64
patience = 0
[tracking]
experiment = "bench"
log_model = false
log_images = false
log_dataset = false
[tune]
n_trials = {n}
sampler = "random"
seed = 7
pruner = "{pruner}"
warmup_epochs = 3
[tune.space]
"train.lr" = {{ type = "float", low = 1e-4, high = 3e-2, log = true }}
"model.encoder.activation" = {{ type = "categorical", choices = ["sigmoid", "tanh", "relu"] }}
"""


def run_study(n: int, pruner: str, workers: int, data: str = "digits", epochs: int = 40, code_dim: int = 32):
    home = Path(tempfile.mkdtemp(prefix="aepipe-tune-bench-"))
    path = home / "bench.toml"
    path.write_text(PIPELINE.format(n=n, pruner=pruner, data=data, epochs=epochs, code_dim=code_dim))
    env = {**os.environ, "AEPIPE_HOME": str(home / "mlruns")}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aepipe.cli", "tune", str(path), "--n-workers", str(workers), "--json"],
                   check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    import optuna

    from aepipe.tune import make_storage

    study = optuna.load_study(
        study_name="bench", storage=make_storage(f"journal:///{home / 'mlruns' / 'optuna.journal'}")
    )
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    best = min(t.value for t in study.trials if t.value is not None)
    states = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return wall, epochs, best, states


def main() -> None:
    print(f"cores: {os.cpu_count()}")
    one = run_study(24, "none", 1, "digits", 60, 32)
    two = run_study(24, "none", 2, "digits", 60, 32)
    print(f"1 worker : {one[0]:6.1f} s  ({one[3]})")
    print(f"2 workers: {two[0]:6.1f} s  ({two[3]})  ratio {two[0] / one[0]:.2f} (target <= 0.65)")
    full = run_study(16, "none", 1)
    pruned = run_study(16, "median", 1)
    saved = 1 - pruned[1] / full[1]
    print(f"no pruning    : {full[1]} epochs, best val_loss {full[2]:.3f}, {full[0]:.1f} s ({full[3]})")
    print(f"median pruner : {pruned[1]} epochs, best val_loss {pruned[2]:.3f}, {pruned[0]:.1f} s ({pruned[3]})")
    print(f"epochs saved: {100 * saved:.0f}% (target >= 30%); best value difference {pruned[2] - full[2]:+.3f}")


if __name__ == "__main__":
    main()
