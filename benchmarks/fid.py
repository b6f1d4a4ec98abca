"""What FID costs, in both feature spaces (issue 20).

Targets: the ``domain``-feature FID (with KID, precision/recall, density/coverage) of 10,000
images against 10,000 in under 20 s on the 2-core machine; the Inception-space FID of 10,000
generated 28x28 images against 10,000 real ones: its wall time here and on a GPU.

- ``domain``: mnist5k's classifier, trained once (timed: the cold call) and then loaded from the
  store's cache (the warm call); features of 2 x ``--n`` images (mnist5k's 5,000 images drawn
  with replacement, the "generated" set with added noise) and every metric.
- ``inception``: Inception-v3 features of 2 x ``--inception-n`` images (loading the weights
  timed apart), images/s, and every metric on the features; with ``--n`` larger than
  ``--inception-n`` the time for ``--n`` is extrapolated from the measured rate and printed as
  such. ``--metrics-n`` also times the metrics alone on that many random 2048-wide rows per set.

    python benchmarks/fid.py [--n 10000] [--inception-n 500] [--device cpu|cuda] [--skip-domain]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np
import torch


def _cpu() -> float:
    """CPU seconds of this process so far (all threads): on a shared machine, what the work
    itself costs, whatever the wall time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _sets(data, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real images (drawn with replacement) and ``n`` "generated" ones (others, with noise)."""
    x = data.x_train.cpu()
    g = torch.Generator().manual_seed(seed)
    real = x[torch.randint(len(x), (n,), generator=g)]
    fake = (x[torch.randint(len(x), (n,), generator=g)] + 0.1 * torch.randn(n, x.shape[1], generator=g)).clamp(0, 1)
    return real, fake


def domain(data, n: int, device: str) -> dict:
    from aepipe.evaluation.generation import feature_space, generation_metrics

    real, fake = _sets(data, n)
    out = {}
    t0 = time.perf_counter()
    space = feature_space("domain", data, device)
    out["cold_prepare_s"] = time.perf_counter() - t0
    out["trained"] = space.trained
    out["accuracy"] = space.accuracy
    t0, c0 = time.perf_counter(), _cpu()
    space = feature_space("domain", data, device)  # the cached classifier
    out["warm_prepare_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    f_real, f_fake = space.features(real), space.features(fake)
    t2 = time.perf_counter()
    metrics = generation_metrics(f_real, f_fake)
    t3 = time.perf_counter()
    out.update(features_s=t2 - t1, metrics_s=t3 - t2, warm_total_s=t3 - t0, warm_total_cpu_s=_cpu() - c0, images=2 * n,
               **metrics)
    return out


def inception(data, n: int, n_target: int, device: str) -> dict:
    from aepipe.evaluation.generation import feature_space, generation_metrics

    real, fake = _sets(data, n, seed=1)
    t0, c0 = time.perf_counter(), _cpu()
    space = feature_space("inception", data, device)
    t1 = time.perf_counter()
    f_real, f_fake = space.features(real), space.features(fake)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    metrics = generation_metrics(f_real, f_fake)
    t3 = time.perf_counter()
    rate = 2 * n / (t2 - t1)
    out = dict(load_s=t1 - t0, features_s=t2 - t1, images_per_s=rate, metrics_s=t3 - t2, total_s=t3 - t0,
               total_cpu_s=_cpu() - c0, images=2 * n, **metrics)
    if n_target > n:
        out[f"extrapolated_features_s_for_{n_target}+{n_target}"] = 2 * n_target / rate
    return out


def metrics_only(n: int, width: int = 2048) -> dict:
    from aepipe.evaluation.generation import generation_metrics

    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=(n, width))).astype(np.float32)
    b = np.abs(rng.normal(size=(n, width)) + 0.05).astype(np.float32)
    t0 = time.perf_counter()
    generation_metrics(a, b)
    return {"rows_per_set": n, "width": width, "metrics_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="images per set (domain: measured; inception: the target)")
    ap.add_argument("--inception-n", type=int, default=500, help="images per set measured in Inception space (0: skip)")
    ap.add_argument(
        "--metrics-n", type=int, default=0, help="also time the metrics alone on this many 2048-wide rows per set"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--skip-domain", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from aepipe.evaluation.image_sets import load_dataset

    results: dict = {"device": args.device, "threads": torch.get_num_threads(), "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as home:
        os.environ["AEPIPE_HOME"] = home  # a fresh store: the first domain call trains
        data = load_dataset({"name": args.dataset}, args.device)
        if not args.skip_domain:
            results["domain"] = domain(data, args.n, args.device)
        if args.inception_n:
            results["inception"] = inception(data, args.inception_n, args.n, args.device)
    if args.metrics_n:
        results["metrics_only"] = metrics_only(args.metrics_n)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"device {args.device}, {results['threads']} torch threads, load average {results['load_average'][0]:.1f}")
    for part in ("domain", "inception", "metrics_only"):
        if part in results:
            print(f"{part}:")
            for key, value in results[part].items():
                print(f"  {key:<40} {value:.4g}" if isinstance(value, float) else f"  {key:<40} {value}")


if __name__ == "__main__":
    main()
