"""Steps per second on a GPU: a hand-written eager loop, aepipe eager and aepipe with
``train.cuda_graphs = true`` (issue 35, item 2), on two workloads:

- ``small``: the MLP 64-32-8 and back on the digits, batch 16 (benchmarks/step_overhead.py's
  workload: bound by the Python side and kernel launches; the target is graphs >= 2x the hand loop);
- ``anchors``: the MLP 784-512-256-16 on mnist5k, batch 128 (benchmarks/loop_speed.py's).

For each, the autoencoder and the VAE; the three alternate ``--rounds`` times, median. aepipe runs
its whole loop (validation every epoch, a tracked run with MLflow's system metrics: GPU
utilisation and memory with nvidia-ml-py); steps per second are its optimizer steps over
``train_seconds`` (the graphed run trains ``n // batch`` steps an epoch: its last short batch is
dropped). The final validation losses are printed beside, to show the graphed path trains as the
eager one does (within seed noise).

    python benchmarks/cuda_graphs.py --device cuda [--rounds 3] [--epochs 5] [--workloads small,anchors]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("AEPIPE_HOME", tempfile.mkdtemp(prefix="aepipe-bench-"))
os.environ.pop("MLFLOW_TRACKING_URI", None)

import loop_speed  # noqa: E402 - the anchors' workload
import step_overhead  # noqa: E402 - the small workload

WORKLOADS = {"small": (step_overhead, 16), "anchors": (loop_speed, 128)}


def hand(module, x: torch.Tensor, vae: bool, epochs: int, batch: int) -> tuple[float, int]:
    """Seconds and steps of the hand-written eager loop on ``x``'s device (``loss.item()`` each step)."""
    torch.manual_seed(0)
    model = module.Net(vae).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n, steps = x.shape[0], 0
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, device=x.device)
        total = 0.0
        for i in range(0, n, batch):
            loss = model.loss(x[perm[i: i + batch]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
    return time.perf_counter() - t0, steps


def tree(module, variant: str, epochs: int, device: str, graphs: bool, system_metrics: bool = True) -> dict:
    t = module.settings(variant, epochs)
    t["train"].update(device=device, cuda_graphs=graphs)
    t["tracking"].update(system_metrics=system_metrics, experiment="benchmark-cuda-graphs")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workloads", default="small,anchors")
    parser.add_argument("--variants", default="ae,vae")
    args = parser.parse_args()

    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import load_data, train

    pm = get_plugin_manager()
    tracker = None  # MLflow, with its system metrics; where MLflow cannot be imported, in memory (no system metrics)
    if importlib.util.find_spec("mlflow") is None:
        from aepipe.tracking.memory import MemoryTracker

        tracker = MemoryTracker(Path(os.environ["AEPIPE_HOME"]) / "memory")
        print("MLflow is not installed here: runs recorded in memory, without system metrics")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}; device {name}; load {os.getloadavg()[0]:.2f}")
    for workload in args.workloads.split(","):
        module, batch = WORKLOADS[workload]
        for variant in args.variants.split(","):
            vae = variant == "vae"
            eager, graphed = (resolve(pm, tree=tree(module, variant, args.epochs, args.device, g, tracker is None))
                              for g in (False, True))
            x = load_data(eager, device).x_train
            n = x.shape[0]
            rows: dict[str, list[float]] = {"hand": [], "eager": [], "graphs": []}
            losses: dict[str, list[float]] = {"eager": [], "graphs": []}
            hand(module, x, vae, 1, batch)  # warm: kernels, allocator
            runs = [("eager", eager, -(-n // batch)), ("graphs", graphed, n // batch)]
            if device.type != "cuda":  # refused off CUDA: the script still runs the rest here
                print("graphs: train.cuda_graphs is refused off CUDA; measuring the hand loop and aepipe eager only")
                runs, rows["graphs"], losses["graphs"] = runs[:1], [float("nan")], [float("nan")]
            for label, p, _ in runs:
                train(resolve(pm, tree=tree(module, variant, 1, args.device, label == "graphs", tracker is None)), pm,
                      tracker=tracker)
            for _ in range(args.rounds):
                seconds, steps = hand(module, x, vae, args.epochs, batch)
                rows["hand"].append(steps / seconds)
                for label, p, per_epoch in runs:
                    result = train(p, pm, tracker=tracker)
                    rows[label].append(per_epoch * result.epochs / result.metrics["train_seconds"])
                    losses[label].append(result.history[-1]["val_loss"])
            med = {k: statistics.median(v) for k, v in rows.items()}
            print(f"{workload} {variant}: steps/s, median of {args.rounds}: hand {med['hand']:,.0f}, aepipe eager "
                  f"{med['eager']:,.0f} ({med['eager'] / med['hand']:.2f}x), aepipe graphs {med['graphs']:,.0f} "
                  f"({med['graphs'] / med['hand']:.2f}x the hand loop, {med['graphs'] / med['eager']:.2f}x eager); "
                  f"last val_loss eager {statistics.median(losses['eager']):.3f}, graphs "
                  f"{statistics.median(losses['graphs']):.3f}")


if __name__ == "__main__":
    main()
