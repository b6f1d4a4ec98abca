"""Streamed data against held data (issue 14).

``images``: a folder of N generated 32x32 colour PNGs (default 20,000), trained on with
``data.in_memory = true`` and ``false`` (same pipeline, seed, split and batches). Prints the
training throughput of each (images per second over epochs 2..E, the first epoch also pays
for worker start-up) and their ratio (target: streamed within 1.5x of held), for an MLP VAE
(cheap per image: reading dominates) and the ``resnet`` family (the default for this size).

``mmap``: a float32 ``.npy`` file larger than half of this machine's free memory, trained on
for one epoch by ``aepipe train`` with ``data.in_memory = "auto"``; a sampler reads
``RssAnon`` (anonymous resident memory: file pages the kernel can drop do not count) of the
training process and its DataLoader workers every 50 ms. Target: the training process's peak
below a quarter of the array's size.

Usage: python benchmarks/streaming.py images [N] [EPOCHS]
       python benchmarks/streaming.py mmap [GB] [DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def make_images(root: Path, n: int) -> float:
    """``n`` 32x32 colour PNGs in 10 class folders: smooth random blobs, so they compress as photos do."""
    from PIL import Image

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(n):
        cx, cy, r = rng.uniform(4, 28), rng.uniform(4, 28), rng.uniform(3, 12)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        colour, back = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        image = back * (1 - blob) + colour * blob + rng.normal(0, 8, (32, 32, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / f"class{i % 10}" / f"{i:06d}.png")
    return time.perf_counter() - started


def train_images(folder: Path, variant: str, held: bool, epochs: int, extra: dict) -> dict:
    import torch

    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking.memory import MemoryTracker
    from aepipe.training import train

    pm = get_plugin_manager()
    # the end-of-run IW bound is not what is timed
    model = {**extra.get("model", {}), "regularizers": {"kl": {"iw_samples": 1}}}
    data = {"name": "imagefolder", "path": str(folder), "in_memory": held, **extra.get("data", {})}
    tree = {"variant": variant, "data": data, "model": model,
            "train": {"epochs": epochs, "patience": 0, "batch_size": 128, "checkpoint_seconds": 1e9}}
    pipeline = resolve(pm, tree=tree, overrides=["tracking.log_images=false", "tracking.log_model=false",
                                                 "tracking.log_dataset=false"])
    started = time.perf_counter()
    result = train(pipeline, pm, tracker=MemoryTracker())
    wall = time.perf_counter() - started
    n = len(result.data.train)
    later = [h["epoch_seconds"] for h in result.history[1:]] or [result.history[0]["epoch_seconds"]]
    return {"images_per_second": n / (sum(later) / len(later)), "first_epoch_s": result.history[0]["epoch_seconds"],
            "wall_s": wall, "test_loss": result.metrics["test_loss"], "threads": torch.get_num_threads(),
            "path": "streamed" if result.data.streamed else "memory"}


def images(n: int, epochs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        seconds = make_images(folder, n)
        size = sum(f.stat().st_size for f in folder.rglob("*.png"))
        print(
            f"{n} PNGs, 32x32 RGB, {size / 1e6:.1f} MB on disk, written in {seconds:.1f} s; {os.cpu_count()} CPU cores"
        )
        models = {
            "vae (MLP 256-128)": ("vae", {}),
            "resnet-vae (widths 16, 32, 1 block)": (
                "resnet-vae",
                {"model": {"encoder": {"widths": [16, 32], "blocks": 1}, "decoder": {"widths": [16, 32], "blocks": 1}}},
            ),
        }
        for label, (variant, extra) in models.items():
            held = train_images(folder, variant, True, epochs, extra)
            streamed = train_images(folder, variant, False, epochs, extra)
            print(f"{label}: held {held['images_per_second']:.0f} images/s (first epoch {held['first_epoch_s']:.1f} s, "
                  f"test_loss {held['test_loss']:.2f}); streamed {streamed['images_per_second']:.0f} images/s (first "
                  f"epoch {streamed['first_epoch_s']:.1f} s, test_loss {streamed['test_loss']:.2f}); held/streamed "
                  f"{held['images_per_second'] / streamed['images_per_second']:.2f}x (target <= 1.5x)")
        from aepipe_plugins.datasets.images import ImageFiles

        rows = ImageFiles(sorted(folder.rglob("*.png"))[:4000], 3, None, "bench")
        decode = time.perf_counter()
        rows.read(np.arange(len(rows)))
        print(f"reading and decoding alone: {(time.perf_counter() - decode) / len(rows) * 1e6:.0f} us per image on one "
              "core")


def rss_anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def mmap(gb: float | None, where: Path) -> None:
    import psutil

    from aepipe.limits import available_bytes

    free = available_bytes("cpu")  # MemAvailable
    size = int(gb * 1e9) if gb else int(free * 0.55)
    d = 3072
    rows = size // (4 * d)
    path = where / "big.npy"
    started = time.perf_counter()
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, d))
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(16, d)).astype(np.float32)
    for start in range(0, rows, 20_000):  # low-rank rows: something for an autoencoder to learn
        stop = min(rows, start + 20_000)
        array[start:stop] = rng.normal(size=(stop - start, 16)).astype(np.float32) @ basis
    array.flush()
    del array
    nbytes = path.stat().st_size
    print(f"{path}: {rows:,} rows x {d} float32 = {nbytes / 1e9:.2f} GB, written in "
          f"{time.perf_counter() - started:.0f} s; MemAvailable before writing {free / 1e9:.2f} GB (half: "
          f"{free / 2e9:.2f} GB)")
    home = where / "mlruns"
    args = [sys.executable, "-m", "aepipe.cli", "train", "--json", "-q", str(ROOT / "pipelines" / "vanilla.toml"),
            "--set", "data.name='file'", "--set", f"data.path='{path}'", "--set", "data.val_fraction=0.02",
            "--set", "data.test_fraction=0.02", "--set", "train.epochs=1", "--set", "train.batch_size=512",
            "--set", "tracking.log_images=false", "--set", "tracking.log_dataset=false", "--set",
            "tracking.log_model=false"]
    env = {**os.environ, "AEPIPE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = {"main": 0, "workers": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["main"] = max(peak["main"], rss_anon(proc.pid))
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                children = []
            peak["workers"] = max(peak["workers"], sum(rss_anon(c.pid) for c in children))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode:
        print(err[-3000:])
        raise SystemExit(proc.returncode)
    summary = json.loads(out)
    import mlflow

    tags = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_run(summary["run_id"]).data.tags
    print(f"aepipe train (vanilla, 1 epoch, batch 512): {wall:.0f} s, train_seconds "
          f"{summary['metrics']['train_seconds']:.0f}, test_loss {summary['metrics']['test_loss']:.4f}")
    print(f"data path: {tags.get('aepipe.data.path')} ({tags.get('aepipe.data.reason')})")
    print(f"peak RssAnon: training process {peak['main'] / 1e9:.3f} GB = {peak['main'] / nbytes:.1%} of the array "
          f"(target < 25%); its DataLoader workers together {peak['workers'] / 1e9:.3f} GB")
    path.unlink()


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "images"
    if what == "images":
        images(int(sys.argv[2]) if len(sys.argv) > 2 else 20_000, int(sys.argv[3]) if len(sys.argv) > 3 else 3)
    elif what == "mmap":
        gb = float(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None
        where = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(tempfile.mkdtemp())
        mmap(gb, where)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
