"""What one optimizer step costs in aepipe against a hand-written loop, where the step is all
overhead (issue 35, item 1).

Workload: scikit-learn's digits (aepipe's seeded split: 1,259 rows to train, 179 to validate),
an MLP 64-32-8 and back (ReLU), Bernoulli likelihood, Adam 1e-3, batch 16, one thread: the
arithmetic is negligible, so what is measured is the Python side of each step and the tensor
operations it dispatches. An autoencoder (``deep``) and a VAE (``vae``: the gaussian
bottleneck, the closed-form KL to a standard-normal prior).

The hand loop is what one writes in 30 lines and does the same work per epoch: a shuffled
index, batches by index, ``loss.item()`` summed per step, then the validation loss (one pass in
evaluation mode). aepipe runs its whole loop: validation and its metrics every epoch, early
stopping's bookkeeping (the best weights kept), hooks, the stop check, a tracked run (a
temporary SQLite store).

Two figures per variant:

- **microseconds per optimizer step**: the loop's wall time over the epochs (aepipe's
  ``train_seconds``: first epoch's start to last epoch's end, validation included) divided by
  the steps; aepipe and the hand loop alternate in one process, ``--rounds`` times, median;
- **tensor operations dispatched per step**: every ATen operation the training runs (forward,
  backward, optimizer, metrics, validation, the epoch's bookkeeping), counted with a
  ``TorchDispatchMode``; the fixed costs of a run (building, the first-step check, the test
  evaluation) are taken out by counting a run of ``E`` epochs and one of ``2E`` and dividing the
  difference by the steps of ``E`` epochs.

With ``--cpu-time``, also the process's CPU microseconds per step (its threads included: the
tracker's writer too), E and 2E epochs alternated per round: on a machine whose other work
takes the cores, wall time also counts the waits for a core, CPU time only the loop's work.

    OMP_NUM_THREADS=1 python benchmarks/step_overhead.py [--rounds 3] [--epochs 5] [--cpu-time] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from loop_speed import Net as HandNet  # benchmarks/ is the script's folder, first on sys.path

os.environ.setdefault("AEPIPE_HOME", tempfile.mkdtemp(prefix="aepipe-bench-"))
os.environ.pop("MLFLOW_TRACKING_URI", None)

BATCH = 16


def settings(variant: str, epochs: int) -> dict:
    """The pipeline of ``variant`` (``ae`` or ``vae``) on the small workload."""
    model: dict = {"code_dim": 8, "likelihood": "bernoulli",
                   "encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]}}
    if variant == "vae":
        model["bottleneck"] = {"name": "gaussian"}
        model["regularizers"] = {"kl": {"iw_samples": 1}}
        model["prior"] = {"name": "standard-normal"}
    return {"variant": "deep" if variant == "ae" else "vae", "data": {"name": "digits"}, "model": model,
            # periodic checkpoints by wall time (30 s) fire on a loaded machine and not on an idle one,
            # where these runs take a second: kept out, so that the figures do not depend on the load
            "train": {"epochs": epochs, "batch_size": BATCH, "lr": 1e-3, "patience": 0, "device": "cpu",
                      "checkpoint_seconds": 3600},
            "tracking": {"experiment": "benchmark-step", "log_model": False, "log_images": False, "log_dataset": False}}


def Net(vae: bool) -> nn.Module:
    """The hand loop's model: loop_speed's hand-written autoencoder at 64-32-8."""
    return HandNet(vae, d=64, k=8, hidden=(32,))


def hand_loop(x: torch.Tensor, x_val: torch.Tensor, vae: bool, epochs: int) -> tuple[float, int]:
    """Seconds of ``epochs`` epochs of the hand loop (training, then the validation loss), and its steps."""
    torch.manual_seed(0)
    model = Net(vae)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n, steps = x.shape[0], 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, BATCH):
            xb = x[perm[i: i + BATCH]]
            loss = model.loss(xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
            steps += 1
        model.eval()
        with torch.no_grad():
            model.loss(x_val).item()
    return time.perf_counter() - t0, steps


class CountOps(TorchDispatchMode):
    """Counts every ATen operation dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def counted(fn, *args) -> Counter:
    with CountOps() as mode:
        fn(*args)
    return mode.ops


def per_step_ops(run, epochs: int, steps: int) -> tuple[float, Counter]:
    """Operations per step of ``run(epochs)`` with the fixed costs taken out (``2E`` epochs less ``E``)."""
    short, long = counted(run, epochs), counted(run, 2 * epochs)
    diff = Counter(long)
    diff.subtract(short)
    return sum(diff.values()) / steps, diff


def cpu_per_step(run, epochs: int, steps: int) -> float:
    """CPU microseconds per step of ``run(epochs)`` (this process's CPU time, its threads'
    included), with the fixed costs taken out as for the operations: on a machine whose other
    work takes the cores, CPU time counts only what the loop itself did."""
    c0 = time.process_time()
    run(epochs)
    c1 = time.process_time()
    run(2 * epochs)
    c2 = time.process_time()
    return 1e6 * ((c2 - c1) - (c1 - c0)) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--variants", default="ae,vae")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cpu-time", action="store_true",
                        help="also CPU time per step (E and 2E epochs, alternated): steadier than wall time on a busy "
                             "machine")
    parser.add_argument("--show-ops", action="store_true",
                        help="list the operations aepipe dispatches beyond the hand loop's")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import load_data, train

    pm = get_plugin_manager()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread; load {os.getloadavg()[0]:.2f}; store "
          f"{os.environ['AEPIPE_HOME']}")
    figures: dict[str, dict] = {}
    for variant in args.variants.split(","):
        pipeline = resolve(pm, tree=settings(variant, args.epochs))
        data = load_data(pipeline, torch.device("cpu"))
        x, x_val = data.x_train, data.val.x
        vae = variant == "vae"
        steps = args.epochs * -(-x.shape[0] // BATCH)

        def aepipe_run(epochs: int, variant: str = variant) -> float:
            result = train(resolve(pm, tree=settings(variant, epochs)), pm)
            return result.metrics["train_seconds"]

        aepipe_run(1)  # warm: imports, store, first-call costs
        hand_loop(x, x_val, vae, 1)
        rows: dict[str, list[float]] = {"hand": [], "aepipe": []}
        for _ in range(args.rounds):
            seconds, hand_steps = hand_loop(x, x_val, vae, args.epochs)
            assert hand_steps == steps
            rows["hand"].append(1e6 * seconds / steps)
            rows["aepipe"].append(1e6 * aepipe_run(args.epochs) / steps)
        cpu: dict[str, list[float]] = {"hand": [], "aepipe": []}
        for _ in range(args.rounds if args.cpu_time else 0):
            cpu["hand"].append(cpu_per_step(lambda e: hand_loop(x, x_val, vae, e), args.epochs, steps))
            cpu["aepipe"].append(cpu_per_step(aepipe_run, args.epochs, steps))
        ratios = [a / h for a, h in zip(rows["aepipe"], rows["hand"])]
        hand_ops, hand_by = per_step_ops(lambda e: hand_loop(x, x_val, vae, e), args.epochs, steps)
        ours_ops, ours_by = per_step_ops(aepipe_run, args.epochs, steps)
        med = {k: statistics.median(v) for k, v in rows.items()}
        figures[variant] = {"us_per_step": med, "ratio_median": statistics.median(ratios), "ratios": ratios,
                            "ops_per_step": {"hand": hand_ops, "aepipe": ours_ops}, "ops_ratio": ours_ops / hand_ops,
                            "load": os.getloadavg()[0]}
        print(f"{variant}: microseconds per step, median of {args.rounds}: hand {med['hand']:.0f}, aepipe "
              f"{med['aepipe']:.0f}; "
              f"aepipe / hand median {statistics.median(ratios):.3f} (rounds {', '.join(f'{r:.3f}' for r in ratios)})")
        print(f"    operations per step: hand {hand_ops:.1f}, aepipe {ours_ops:.1f} ({ours_ops / hand_ops:.3f}x); "
              f"load {os.getloadavg()[0]:.2f}")
        if args.cpu_time:
            cpu_ratios = [a / h for a, h in zip(cpu["aepipe"], cpu["hand"])]
            figures[variant]["cpu_us_per_step"] = {k: statistics.median(v) for k, v in cpu.items()}
            figures[variant]["cpu_ratio_median"] = statistics.median(cpu_ratios)
            print(f"    CPU microseconds per step, median of {args.rounds}: hand {statistics.median(cpu['hand']):.0f}, "
                  "aepipe "
                  f"{statistics.median(cpu['aepipe']):.0f}; aepipe / hand median {statistics.median(cpu_ratios):.3f} "
                  f"(rounds {', '.join(f'{r:.3f}' for r in cpu_ratios)}); load {os.getloadavg()[0]:.2f}")
        if args.show_ops:
            extra = Counter(ours_by)
            extra.subtract(hand_by)
            for name, count in sorted(extra.items(), key=lambda kv: -abs(kv[1])):
                if count:
                    print(f"      {name}: {count / steps:+.2f} per step (aepipe {ours_by[name] / steps:.2f}, hand "
                          f"{hand_by[name] / steps:.2f})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
