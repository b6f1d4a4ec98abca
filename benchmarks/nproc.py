"""`aepipe train --nproc 2` (gloo, CPU) against one process: the same pipeline, global batch,
seed and epochs. Prints both test losses, their relative difference (target: within 5%) and
the wall time of each command. Usage: python benchmarks/nproc.py [PIPELINE] [EPOCHS]."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(pipeline: str, epochs: int, nproc: int, home: Path) -> tuple[float, float, float]:
    args = [sys.executable, "-m", "aepipe.cli", "train", pipeline, "--json", "-q", "--set", f"train.epochs={epochs}",
            "--set", "train.patience=0", "--set", "tracking.log_images=false", "--set", "tracking.log_model=false",
            "--set", "tracking.log_dataset=false", "--nproc", str(nproc)]
    env = {**os.environ, "AEPIPE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - started
    summary = json.loads(out.stdout)
    return summary["metrics"]["test_loss"], summary["metrics"]["train_seconds"], wall


def main() -> None:
    pipeline = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "pipelines" / "vae.toml")
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory() as tmp:
        one = run(pipeline, epochs, 1, Path(tmp) / "one")
        two = run(pipeline, epochs, 2, Path(tmp) / "two")
    print(f"pipeline {Path(pipeline).name}, {epochs} epochs, {os.cpu_count()} CPU cores")
    print(f"1 process : test_loss {one[0]:.4f}  train_seconds {one[1]:.1f}  command {one[2]:.1f} s")
    print(f"2 processes: test_loss {two[0]:.4f}  train_seconds {two[1]:.1f}  command {two[2]:.1f} s")
    print(f"relative difference of test_loss: {abs(two[0] - one[0]) / one[0]:.2%} (target: within 5%)")


if __name__ == "__main__":
    main()
