"""The ``dictionary`` metrics: a code read as a sparse dictionary's activations (sparse
autoencoders on a network's activations), over one split, in one pass.

- ``l0``: latents active (non-zero) per input, averaged;
- ``fvu``: the fraction of variance unexplained, sum ||x - x^||^2 / sum ||x - mean x||^2 over the
  split (``explained_variance`` is 1 - fvu); both unchanged by the dataset's scaling;
- ``cosine``: the mean cosine similarity of each input and its reconstruction, in the dataset's
  own units (the scaling undone);
- ``dead_fraction``: the share of latents that fire on no input of the split;
- ``dense_fraction``: the share of latents that fire on more than :data:`DENSE` of the inputs.

:func:`firing_rates` gives each latent's share of inputs it fires on (the density histogram).
"""

from __future__ import annotations

from typing import Any

import torch

from aepipe.data import batches

#: a latent firing on more than this share of the inputs is dense
DENSE = 0.1


@torch.no_grad()
def firing_rates(model: Any, split: Any, batch: int = 4096) -> torch.Tensor:
    """Each latent's share of the inputs of ``split`` on which it is non-zero (float64, on the device)."""
    counts, n = None, 0
    for xb, yb in batches(split, batch_size=batch):
        fired = (model.encode(xb, yb).code != 0).sum(0, dtype=torch.float64)
        counts = fired if counts is None else counts + fired
        n += xb.shape[0]
    return counts / max(n, 1)


@torch.no_grad()
def dictionary_metrics(model: Any, split: Any, value_range: tuple[float, float] = (0.0, 1.0),
                       batch: int = 4096) -> dict[str, float]:
    """``l0``, ``fvu``, ``explained_variance``, ``cosine``, ``dead_fraction`` and ``dense_fraction`` of ``split``."""
    lo, span = float(value_range[0]), float(value_range[1] - value_range[0])
    totals, sum_x, counts, n = None, None, None, 0
    for xb, yb in batches(split, batch_size=batch):
        code = model.encode(xb, yb).code
        recon = model.decode(code, model.one_hot(yb))
        x, r = xb.double(), recon.double()
        cos = torch.nn.functional.cosine_similarity(lo + span * x, lo + span * r, dim=1, eps=1e-12)
        fired = code != 0
        part = torch.stack([fired.sum(), (x - r).pow(2).sum(), x.pow(2).sum(), cos.sum()]).double()
        totals = part if totals is None else totals + part
        sum_x = x.sum(0) if sum_x is None else sum_x + x.sum(0)
        c = fired.sum(0, dtype=torch.float64)
        counts = c if counts is None else counts + c
        n += xb.shape[0]
    active, err, sq, cos = totals.tolist()
    variance = sq - float(sum_x.pow(2).sum()) / n
    fvu = err / variance if variance > 0 else float("nan")
    rates = counts / n
    return {"l0": active / n, "fvu": fvu, "explained_variance": 1.0 - fvu, "cosine": cos / n,
            "dead_fraction": float((rates == 0).double().mean()),
            "dense_fraction": float((rates > DENSE).double().mean())}
