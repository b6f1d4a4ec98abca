"""Sparse autoencoders on MiniLM's activations (issue 34): how fast the activations are cached,
and ``topk-sae`` training in aepipe against a hand-written TopK SAE loop on the same cache.

1. **Caching**: the ``activations`` dataset computes all-MiniLM-L6-v2's residual stream after
   block 3 over ``--tokens`` tokens of standard-library docstrings (windows of 64) into a fresh
   cache folder; tokens per second of the model's pass and writing (the cache record's
   ``seconds``) and of the whole load (tokenizing, loading the model, hashing included).
2. **Training**: the same cached activations (normalised, held in memory), a TopK SAE of
   ``--width`` latents, k = ``--k``, batch ``--batch``, Adam at 1e-3, ``--epochs`` epochs. aepipe
   runs ``sae-encoder`` / ``topk-code`` / ``sae-decoder`` (no AuxK: the hand loop has none) with
   its whole loop (validation each epoch, tracking to a temporary store) and reports
   ``train_seconds``; the hand loop is what one writes: tensors in memory, a shuffled index per
   epoch, TopK, squared error, the gradient's component along each atom removed, Adam, atoms
   renormalised. They alternate (hand, aepipe, ...) ``--rounds`` times; the ratio is aepipe's
   training tokens per second over the hand loop's, median over rounds.

    python benchmarks/sae.py [--tokens 20000] [--width 1536] [--k 32] [--epochs 5] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("AEPIPE_HOME", tempfile.mkdtemp(prefix="aepipe-bench-"))
os.environ.pop("MLFLOW_TRACKING_URI", None)
PACKAGES = ("email", "http", "logging", "unittest", "json", "concurrent", "importlib", "argparse", "csv", "difflib")


def corpus(folder: Path) -> Path:
    from aepipe_plugins.datasets.activations import docstrings

    path = folder / "stdlib-docstrings.txt"
    path.write_text("\n\n".join(doc for p in PACKAGES for _, doc in docstrings(p)), encoding="utf-8")
    return path


def data_table(text: Path, tokens: int, cache: Path, device: str) -> dict:
    return {"name": "activations", "text": str(text), "layer": 3, "context": 64, "max_tokens": tokens,
            "cache": str(cache),
            "device": device, "fidelity_windows": 0, "in_memory": True}


def cache_speed(table: dict) -> dict:
    from aepipe_plugins.datasets.activations import Activations, ActivationsConfig

    started = time.perf_counter()
    rows, _, meta = Activations(ActivationsConfig(**{k: v for k, v in table.items()
                                                     if k not in ("name", "in_memory")})).cached()
    total = time.perf_counter() - started
    return {"tokens": len(rows), "model_seconds": meta["seconds"], "total_seconds": total,
            "tokens_per_s_model": len(rows) / meta["seconds"], "tokens_per_s_total": len(rows) / total}


def pipeline_tree(table: dict, width: int, k: int, batch: int, epochs: int, device: str) -> dict:
    return {"data": table,
            "model": {"code_dim": width, "likelihood": "gaussian", "sigma": 0.5 ** 0.5,
                      "encoder": {"name": "sae-encoder"},
                      "bottleneck": {"name": "topk-code", "k": k},
                      "decoder": {"name": "sae-decoder", "bias_init": "mean"}},
            "train": {"epochs": epochs, "batch_size": batch, "lr": 1e-3, "patience": 0, "device": device},
            "tracking": {"experiment": "benchmark-sae", "log_model": False, "log_images": False, "log_dataset": False}}


def run_aepipe(tree: dict) -> tuple[float, int]:
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import train

    pm = get_plugin_manager()
    result = train(resolve(pm, tree=tree), pm)
    return result.metrics["train_seconds"], len(result.data.train)


def run_hand(x: torch.Tensor, width: int, k: int, batch: int, epochs: int) -> float:
    """A hand-written TopK SAE on ``x`` (already on its device, normalised)."""
    d = x.shape[1]
    dec = torch.nn.init.kaiming_uniform_(torch.empty(width, d, device=x.device))
    dec = torch.nn.Parameter(dec / dec.norm(dim=1, keepdim=True))
    enc = torch.nn.Parameter(dec.detach().clone())
    b_enc = torch.nn.Parameter(torch.zeros(width, device=x.device))
    b_dec = torch.nn.Parameter(x.mean(0).clone())
    opt = torch.optim.Adam([enc, b_enc, dec, b_dec], lr=1e-3)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), device=x.device).split(batch):
            xb = x[idx]
            pre = (xb - b_dec) @ enc.T + b_enc
            values, indices = pre.topk(k, dim=-1, sorted=False)
            code = torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))
            loss = (code @ dec + b_dec - xb).pow(2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                dec.grad -= (dec.grad * dec).sum(1, keepdim=True) * dec
            opt.step()
            with torch.no_grad():
                dec /= dec.norm(dim=1, keepdim=True)
    sync()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--width", type=int, default=1536)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    a = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="aepipe-bench-sae-"))
    table = data_table(corpus(folder), a.tokens, folder / "cache", a.device)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
    c = cache_speed(table)
    print(f"caching {c['tokens']} tokens: {c['tokens_per_s_model']:.0f} tokens/s through the model "
          f"({c['model_seconds']:.1f} s), "
          f"{c['tokens_per_s_total']:.0f} tokens/s for the whole first load ({c['total_seconds']:.1f} s)")
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import load_data

    tree = pipeline_tree(table, a.width, a.k, a.batch, a.epochs, a.device)
    data = load_data(resolve(get_plugin_manager(), tree=tree), torch.device(a.device))
    x = data.train.x
    ratios = []
    for r in range(a.rounds):
        torch.manual_seed(r)
        hand = len(x) * a.epochs / run_hand(x, a.width, a.k, a.batch, a.epochs)
        seconds, n = run_aepipe(tree)
        ours = n * a.epochs / seconds
        ratios.append(ours / hand)
        print(f"round {r + 1}: hand {hand:.0f} tokens/s, aepipe {ours:.0f} tokens/s, ratio {ours / hand:.3f} "
              f"(load {os.getloadavg()[0]:.1f})")
    print(f"median ratio aepipe / hand: {statistics.median(ratios):.3f} over {a.rounds} rounds; "
          f"width {a.width}, k {a.k}, batch {a.batch}, {len(x)} training tokens, {a.epochs} epochs, "
          f"{np.dtype('float32')}")


if __name__ == "__main__":
    main()
