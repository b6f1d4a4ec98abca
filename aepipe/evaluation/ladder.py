"""The judge's ladder: sets of images whose answer is known, scored like generated ones.

A feature space is only worth its figures if they order known degradations the way a reader
expects. :func:`build_ladder` makes, from a labelled dataset, a *reference* set (what generated
images are compared with, as ``aepipe evaluate`` compares them with held-out images) and the
rungs below, each of ``n`` images; :func:`score_ladder` scores every rung against the reference
with :func:`aepipe.evaluation.generation.generation_metrics` in one feature space.

Rungs (all drawn from data disjoint from the reference, seeded):

- ``real``: other held-out images (the floor: what real data scores against itself at this ``n``);
- ``blur-1``, ``blur-2``: ``real`` through a Gaussian blur of sigma ``s`` and ``2 s`` pixels,
  ``s = max(0.5, side / 28)`` (1 pixel for 28x28 images);
- ``noise-1``, ``noise-2``: ``real`` plus Gaussian noise of standard deviation 0.1 and 0.3,
  clipped to [0, 1];
- ``mean``: the mean training image plus Gaussian noise of standard deviation 0.02, clipped
  (the output of a model that learned only the average);
- ``one-class``: images of one mode only (mode collapse): the training images of the most
  frequent class; where the dataset has ground-truth factors and that class still holds more
  than :data:`MODE_SHARE` of the training images, those that also share the most frequent value
  of the next factors in the dataset's order, until at most that share is left (see
  :func:`one_mode`). Digits: one digit. ``shapes``: one shape at one scale (a shape alone, at
  every scale, position, rotation and colour, is a quarter of the data and overlaps every other
  shape drawn at the same place and size: that is a missing factor value, not a collapse);
- ``repeated``: 10 held-out images, each repeated ``n / 10`` times;
- ``train-copies``: training images, copied exactly (FID cannot see memorization; a
  memorization measure must);
- ``shuffled``: each ``real`` image with its pixel positions shuffled (channels kept together).

The held-out pool is the validation and test splits together: the reference takes half of it
(at most ``n``), ``real`` and the rungs made from it the other half, so ``n`` is at most half
the held-out images (270 for ``digits`` at its default split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from aepipe.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from aepipe.data import DataBundle

RUNGS = ("real", "blur-1", "blur-2", "noise-1", "noise-2", "mean", "one-class", "repeated", "train-copies", "shuffled")
#: what each rung is, for tables
DESCRIPTIONS = {
    "real": "other held-out images (the floor)",
    "blur-1": "Gaussian blur, sigma s",
    "blur-2": "Gaussian blur, sigma 2s",
    "noise-1": "additive noise, std 0.1",
    "noise-2": "additive noise, std 0.3",
    "mean": "the mean image (+ noise 0.02)",
    "one-class": "one mode only (one class; factor sets: one value of further factors)",
    "repeated": "10 images repeated",
    "train-copies": "copies of training images",
    "shuffled": "pixel positions shuffled",
}
NOISE = (0.1, 0.3)
#: the one-class rung keeps at most this share of the training images (one digit of ten)
MODE_SHARE = 0.1
MEAN_NOISE = 0.02
REPEATED = 10


@dataclass
class Ladder:
    """A reference set and the rungs (flat rows in [0, 1], ``(n, input_dim)`` float32 tensors)."""

    dataset: str
    n: int
    reference: torch.Tensor
    rungs: dict[str, torch.Tensor] = field(default_factory=dict)
    blur_sigma: float = 0.0


def _split_x(split) -> torch.Tensor:
    import torch

    xs, ys = [], []
    for x, y in split.batches(4096):
        xs.append(x.detach().cpu().float())
        ys.append(y.detach().cpu() if y is not None else None)
    x = torch.cat(xs) if xs else torch.zeros(0)
    y = torch.cat(ys) if ys and ys[0] is not None else None
    return x, y


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(N, C, H, W)`` images through a separable Gaussian of ``sigma`` pixels (radius ``3 sigma``),
    with edges replicated."""
    import torch

    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    x = torch.nn.functional.pad(images, (radius, radius, radius, radius), mode="replicate")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def one_mode(labels: np.ndarray, factors: np.ndarray | None, share: float = MODE_SHARE) -> tuple[np.ndarray, list[int]]:
    """The rows of one mode of the training data, and the factor columns fixed beyond the label:
    the most frequent label; then, while more than ``share`` of the rows are left and factors are
    given, the most frequent value (among the rows left) of each factor in turn that still varies."""
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    mask = labels == values[np.argmax(counts)]
    fixed: list[int] = []
    if factors is not None:
        for j in range(factors.shape[1]):
            if mask.mean() <= share:
                break
            values, counts = np.unique(factors[mask, j], return_counts=True)
            if len(values) > 1:
                mask &= factors[:, j] == values[np.argmax(counts)]
                fixed.append(j)
    return mask, fixed


def build_ladder(data: DataBundle, n: int = 500, seed: int = 0) -> Ladder:
    """The reference set and every rung of :data:`RUNGS` for ``data`` (a labelled image
    dataset), ``n`` images each (fewer where the held-out splits hold fewer than ``2 n``)."""
    import torch

    if data.image_shape is None or len(data.image_shape) != 3:
        raise ConfigError(f"the ladder needs an image dataset; '{data.name}' has no image shape")
    x_train, y_train = _split_x(data.train)
    x_val, _ = _split_x(data.val)
    x_test, _ = _split_x(data.test)
    pool = torch.cat([t for t in (x_val, x_test) if t.numel()])
    if y_train is None or data.n_classes < 2:
        raise ConfigError(f"the ladder needs labels (its one-class rung); '{data.name}' has none")
    n = min(int(n), len(pool) // 2, len(x_train))
    if n <= REPEATED:
        raise ConfigError(
            f"dataset '{data.name}' holds {len(pool)} held-out images; the ladder needs more than {2 * REPEATED}"
        )
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pool), generator=g)
    reference, real = pool[order[:n]], pool[order[n: 2 * n]]
    shape = tuple(data.image_shape)
    images = real.reshape(n, *shape)
    sigma = max(0.5, shape[1] / 28)
    rungs: dict[str, torch.Tensor] = {"real": real}
    rungs["blur-1"] = gaussian_blur(images, sigma).reshape(n, -1)
    rungs["blur-2"] = gaussian_blur(images, 2 * sigma).reshape(n, -1)
    for i, std in enumerate(NOISE, 1):
        rungs[f"noise-{i}"] = (real + std * torch.randn(real.shape, generator=g)).clamp(0, 1)
    mean = x_train.mean(0, keepdim=True)
    rungs["mean"] = (mean + MEAN_NOISE * torch.randn((n, real.shape[1]), generator=g)).clamp(0, 1)
    mode, _ = one_mode(y_train.numpy(), data.train.factors)
    of_class = x_train[torch.from_numpy(mode)]
    pick = (
        torch.randperm(len(of_class), generator=g)[:n]
        if len(of_class) >= n
        else torch.randint(len(of_class), (n,), generator=g)
    )
    rungs["one-class"] = of_class[pick]
    few = real[torch.randperm(n, generator=g)[:REPEATED]]
    rungs["repeated"] = few.repeat(math.ceil(n / REPEATED), 1)[:n]
    rungs["train-copies"] = x_train[torch.randperm(len(x_train), generator=g)[:n]]
    c, h, w = shape
    flat = images.reshape(n, c, h * w)
    perms = torch.argsort(torch.rand((n, h * w), generator=g), dim=1)
    rungs["shuffled"] = torch.gather(flat, 2, perms[:, None, :].expand(n, c, h * w)).reshape(n, -1)
    return Ladder(dataset=data.name, n=n, reference=reference, rungs={k: rungs[k].contiguous() for k in RUNGS},
                  blur_sigma=sigma)


def score_ladder(ladder: Ladder, space: Any, k: int = 5) -> dict[str, dict[str, float]]:
    """``{rung: {fid, kid, precision, recall, density, coverage}}``: every rung of ``ladder``
    against its reference in ``space`` (a prepared feature space), features computed once."""
    from aepipe.evaluation.generation import generation_metrics

    real = space.features(ladder.reference)
    return {name: generation_metrics(real, space.features(x), k=k) for name, x in ladder.rungs.items()}


def ladder_table(scores: dict[str, dict[str, float]], fmt: str = "text",
                 intervals: dict[str, dict[str, list[float]]] | None = None) -> str:
    """The scores of :func:`score_ladder` as a text or markdown table, one row per rung; with
    ``intervals`` (``{rung: {metric: [lo, hi]}}``, over seeds), each value ``mean ± half-width``."""
    from aepipe.evaluation.generation import METRICS

    def cell(name: str, m: str) -> str:
        value = scores[name][m]
        text = f"{value:.4g}" if m in ("fid", "kid") else f"{value:.2f}"
        lo, hi = (intervals or {}).get(name, {}).get(m, (math.nan, math.nan))
        if math.isfinite(lo) and math.isfinite(hi):
            text += f" ± {(hi - lo) / 2:.2g}" if m in ("fid", "kid") else f" ± {(hi - lo) / 2:.2f}"
        return text

    rows = [[name, *(cell(name, m) for m in METRICS)] for name in scores]
    head = ["rung", *METRICS]
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.rjust(wd) if i else c.ljust(wd) for i, (c, wd) in enumerate(zip(r, widths))) for r in [head, *rows]
    )
