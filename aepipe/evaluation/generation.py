"""Generation metrics: how close generated examples lie to real ones in a feature space.

- **FID** (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the real and the
  generated features (means; covariances with ``N - 1``), ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``,
  in float64; the trace of the root in its eigen form (see :func:`frechet_distance`), equal to
  ``pytorch-fid``'s ``scipy.linalg.sqrtm`` computation.
- **KID** (Binkowski et al. 2018): the unbiased estimate of the squared MMD with the polynomial
  kernel ``k(a, b) = (a.b / F + 1)^3``, averaged over 100 random subsets of
  ``min(1000, N, M)`` rows of each set (seeded, so repeatable).
- **precision, recall** (Kynkäänniemi et al. 2019) and **density, coverage** (Naeem et al. 2020)
  with k nearest neighbours (k = 5), on at most 10,000 rows of each set (a seeded subset beyond
  that), computed as the ``prdc`` package does (Euclidean distances; each row's radius the distance to
  its k-th nearest other row, copies included; tested equal to ``prdc`` on sets without repeated
  rows) with one difference: a row is inside a ball when its distance is *at most* the radius
  (``prdc``: strictly below). A row repeated more than k times has a radius of 0, and ``prdc``
  then finds nothing in its ball, so two identical sets of repeated rows score precision and
  recall 0; here its copies are in it, so identical sets score precision, recall and coverage 1
  (density counts the balls of every copy, so it grows with the repeats), while a set of a few
  images repeated (mode collapse) keeps balls of radius 0 and a recall near 0.
- **memorization**, where the training set's features are given (``aepipe evaluate``: the
  training split, at most 20,000 rows; the real rows are then the held-out test split):
  **authenticity** (Alaa et al. 2022) is the share of generated rows that lie farther from their
  nearest training row than that row lies from its own nearest distinct training row: 0 for
  copies of training images; held-out real images score the real-data level (0.52 on digits,
  0.62 on mnist5k in the ``domain`` space), and so does a model that does not copy. **data_copying** is the C_T
  statistic of Meehan et al. (2020): the training set cut into (up to 20) k-means cells, per cell
  a z-scored Mann-Whitney test of the generated rows' distances to the nearest training row
  against the held-out rows' ones, averaged over the cells weighted by their share of the held-out
  rows: near 0 for a model that generalises, strongly negative (below -3) for one that copies its
  training data, positive for samples farther from the data than real ones are.
- **intervals** (:func:`generation_metrics_with_intervals`; ``aepipe evaluate`` logs them as
  ``eval_<metric>_lo`` and ``eval_<metric>_hi``): a 95% bootstrap interval over samples (100
  resamples of the generated and the real rows, seeded), computed from the feature matrices and
  per-row terms already at hand (FID's only where the features are at most 512 wide); its
  conventions are in that function's docstring.

The feature space decides what the figures mean: ``inception`` (Inception-v3 pool features)
gives figures comparable with published ones, ``domain`` (a small classifier trained on the
dataset itself) compares runs on the same dataset with each other. See
:class:`aepipe.feature_space.FeatureSpace`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aepipe.errors import ConfigError
from aepipe.evaluation.memorization import authenticity_rows, copying_cells, copying_statistic
from aepipe.evaluation.neighbours import BLOCK, distances, knn_radii

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.data import DataBundle

METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
#: rows of each set that precision/recall/density/coverage look at, at most
PRDC_ROWS = 10_000
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64:
    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``.

    ``tr((S1 S2)^(1/2))`` is computed in its eigen form: ``S1 S2`` is similar to the symmetric
    ``S1^(1/2) S2 S1^(1/2)``, so the trace is the sum of the square roots of that matrix's
    eigenvalues (numpy's ``eigh``; round-off below 0 clipped). It equals the trace of
    ``scipy.linalg.sqrtm(S1 @ S2)`` that pytorch-fid takes (to 1e-6 relative, tested), about
    7 times faster for 2048 features, and stays accurate where the covariances are singular
    (fewer rows than features), where sqrtm warns. The result is clipped at 0 (round-off can
    make it slightly negative for identical sets)."""
    mu1, mu2 = _numpy(mu1).reshape(-1), _numpy(mu2).reshape(-1)
    s1, s2 = np.atleast_2d(_numpy(sigma1)), np.atleast_2d(_numpy(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"means {mu1.shape}, {mu2.shape} and covariances {s1.shape}, {s2.shape} do not match")
    diff = mu1 - mu2
    values, vectors = np.linalg.eigh((s1 + s1.T) / 2)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T  # S1^(1/2)
    inner = root @ s2 @ root
    trace = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace)
    return max(value, 0.0)


def gaussian_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are examples; ``N - 1`` normalisation) in float64."""
    f = _numpy(features)
    if f.ndim != 2 or len(f) < 2:
        raise ConfigError(f"generation metrics need at least 2 feature rows, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def kernel_inception_distance(real: Any, fake: Any, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                              seed: int = 0) -> float:
    """KID: the unbiased MMD^2 estimate with the kernel ``(a.b / F + 1)^3`` (F the feature width),
    averaged over ``subsets`` random subsets of ``min(subset_size, N, M)`` rows of each set (one
    estimate where that is both whole sets: every subset would give the same)."""
    x, y = _numpy(real), _numpy(fake)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ConfigError(f"KID needs at least 2 rows in each set, got {len(x)} and {len(y)}")
    if m == len(x) == len(y):  # every subset is the whole of both sets: one estimate is all of them
        subsets = 1
    rng = np.random.default_rng(seed)
    width = x.shape[1]
    total = 0.0
    for _ in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        k_aa, k_bb, k_ab = _cubic(a @ a.T / width + 1.0), _cubic(b @ b.T / width + 1.0), _cubic(a @ b.T / width + 1.0)
        within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
        total += within - 2.0 * k_ab.mean()
    return float(total / subsets)


def _cubic(t: np.ndarray) -> np.ndarray:
    return t * t * t  # faster than t ** 3 (numpy's pow)


def _subset(f: np.ndarray, rows: int, seed: int) -> np.ndarray:
    if len(f) <= rows:
        return f
    return f[np.sort(np.random.default_rng(seed).choice(len(f), rows, replace=False))]


# --- k-nearest-neighbour metrics --------------------------------------------------------------

def prdc_rows(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, np.ndarray]:
    """The per-row terms whose means are precision, density (one per generated row), recall and
    coverage (one per real row), with the k-NN radii of :func:`knn_radii` and ``distance <=
    radius`` (``prdc``: ``<``; the same but on ties, which repeated rows make):

    - ``precision[j]``: generated row j lies inside some real row's k-NN ball;
    - ``density[j]``: the number of real balls that hold it, divided by k;
    - ``recall[i]``: real row i lies inside some generated row's k-NN ball;
    - ``coverage[i]``: real row i's own ball holds some generated row."""
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    precision, density = np.empty(len(fake)), np.empty(len(fake))
    recall, nearest_fake = np.zeros(len(real), dtype=bool), np.full(len(real), np.inf)
    for lo in range(0, len(fake), BLOCK):
        d = distances(fake[lo: lo + BLOCK], real)  # (block, N)
        inside = d <= r_real[None, :]
        precision[lo: lo + BLOCK] = inside.any(axis=1)
        density[lo: lo + BLOCK] = inside.sum(axis=1) / k
        recall |= (d <= r_fake[lo: lo + BLOCK, None]).any(axis=0)
        np.minimum(nearest_fake, d.min(axis=0), out=nearest_fake)
    return {"precision": precision, "recall": recall.astype(np.float64), "density": density,
            "coverage": (nearest_fake <= r_real).astype(np.float64)}


# --- the metrics, with their bootstrap intervals ------------------------------------------------

#: resamples of the bootstrap interval unless told otherwise, and its level
RESAMPLES, LEVEL = 100, 0.95
#: rows of each set KID's bootstrap reads (its kernel matrices are computed once, on these)
KID_BOOTSTRAP_ROWS = 2_000
#: features at most for FID's interval: each resample takes covariances and eigenvalues of F x F
#: matrices (64 wide: milliseconds; 2048, Inception's: about 10 s on a CPU, so none)
FID_BOOTSTRAP_WIDTH = 512
#: training rows the memorization metrics compare the samples with, at most (a seeded subset beyond)
MEMORIZATION_ROWS = 20_000
#: the range of each metric that has one: interval bounds are clipped to it
RANGES = {"fid": (0.0, np.inf), "precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": (0.0, np.inf),
          "coverage": (0.0, 1.0), "authenticity": (0.0, 1.0)}


def _checked(real: Any, fake: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _numpy(real), _numpy(fake)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ConfigError(f"real features {x.shape} and generated features {y.shape} must be (N, F) and (M, F)")
    if min(len(x), len(y)) <= k:
        raise ConfigError(f"generation metrics with k = {k} neighbours need more than {k} rows in each set, "
                          f"got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("generation metrics: the features hold NaN or infinite values")
    return x, y


def _training(train: Any, width: int) -> np.ndarray:
    t = _numpy(train)
    if t.ndim != 2 or t.shape[1] != width or len(t) < 2:
        raise ConfigError(f"training features {t.shape} must be (T, {width}) with T >= 2")
    if not np.isfinite(t).all():
        raise ConfigError("generation metrics: the training features hold NaN or infinite values")
    return _subset(t, MEMORIZATION_ROWS, 3)


class _Parts:
    """What the metrics and their bootstrap resamples share: the feature matrices and the per-row
    terms, computed once."""

    def __init__(self, x: np.ndarray, y: np.ndarray, t: np.ndarray | None, k: int):
        self.x, self.y, self.t, self.k = x, y, t, k
        self.px, self.py = _subset(x, PRDC_ROWS, 1), _subset(y, PRDC_ROWS, 2)
        self.rows = prdc_rows(self.px, self.py, k)
        if t is not None:
            self.authentic = authenticity_rows(t, y)
            self.copying = copying_cells(t, x, y)  # its k-means seeded as the estimate's: fixed

    def point(self) -> dict[str, float]:
        out = {"fid": frechet_distance(*gaussian_stats(self.x), *gaussian_stats(self.y)),
               "kid": kernel_inception_distance(self.x, self.y)}
        out.update({name: float(v.mean()) for name, v in self.rows.items()})
        if self.t is not None:
            out["authenticity"] = float(self.authentic.mean())
            out["data_copying"] = copying_statistic(**self.copying)
        return out


def generation_metrics(real: Any, fake: Any, k: int = 5, train: Any = None) -> dict[str, float]:
    """``fid, kid, precision, recall, density, coverage`` between real and generated features
    (``(N, F)`` and ``(M, F)`` tensors or arrays; the conventions are in this module's docstring)
    and, given ``train`` (the training set's features, ``(T, F)``; the real rows are then
    held-out data), the memorization metrics ``authenticity`` and ``data_copying``."""
    x, y = _checked(real, fake, k)
    t = None if train is None else _training(train, x.shape[1])
    return _Parts(x, y, t, k).point()


def generation_metrics_with_intervals(real: Any, fake: Any, k: int = 5, train: Any = None, resamples: int = RESAMPLES,
                                      level: float = LEVEL, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """:func:`generation_metrics` with a bootstrap interval over samples: ``{metric: (estimate, lo, hi)}``.

    Each of ``resamples`` resamples draws the generated rows and the real rows with replacement
    (seeded by ``seed``: repeatable) and recomputes each metric from what was computed once:

    - FID from the resampled rows' weighted means and covariances, where the features are at
      most 512 wide (:data:`FID_BOOTSTRAP_WIDTH`); wider ones (Inception's 2048) get no FID
      interval (``lo`` and ``hi`` are NaN): a resample would cost about 10 s on a CPU;
    - KID as the unbiased MMD^2 of the resampled rows, on kernel matrices computed once on at
      most 2,000 rows of each set (beyond 2,000 rows its interval is a little too wide);
    - precision, density, authenticity (per generated row) and recall, coverage (per real row)
      as the means of their per-row terms over the resampled rows, the k-NN balls of the whole
      sets held fixed: the interval says how much the figure depends on which rows were drawn,
      not how much the balls' radii would move;
    - the data-copying statistic from the resampled rows' distances, its cells held fixed.

    The interval is the resamples' ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles moved by
    the resamples' bias (their median minus the estimate), so that it is centred where the
    estimate is (a resample repeats rows, which by itself raises FID and KID), widened to hold
    the estimate and clipped to the metric's range. ``resamples = 0``: ``lo = hi = estimate``."""
    x, y = _checked(real, fake, k)
    t = None if train is None else _training(train, x.shape[1])
    parts = _Parts(x, y, t, k)
    point = parts.point()
    if resamples <= 0:
        return {name: (v, v, v) for name, v in point.items()}
    draws = _bootstrap(parts, resamples, np.random.default_rng(seed))
    out = {}
    for name, v in point.items():
        if name not in draws:
            out[name] = (v, math.nan, math.nan)
            continue
        values = np.asarray(draws[name])
        bias = float(np.median(values)) - v
        lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2]) - bias
        low, high = RANGES.get(name, (-np.inf, np.inf))
        out[name] = (v, float(np.clip(min(lo, v), low, high)), float(np.clip(max(hi, v), low, high)))
    return out


def _bootstrap(parts: _Parts, resamples: int, rng: np.random.Generator) -> dict[str, list[float]]:
    """Each metric over ``resamples`` resamples of the rows (see :func:`generation_metrics_with_intervals`)."""
    x, y = parts.x, parts.y
    kx, ky = _subset(x, KID_BOOTSTRAP_ROWS, 4), _subset(y, KID_BOOTSTRAP_ROWS, 5)
    width = x.shape[1]
    k_xx, k_yy, k_xy = (_cubic(a @ b.T / width + 1.0) for a, b in ((kx, kx), (ky, ky), (kx, ky)))
    d_xx, d_yy = np.diag(k_xx), np.diag(k_yy)
    nx, ny = len(kx), len(ky)
    out: dict[str, list[float]] = {}

    def counts(n: int) -> np.ndarray:
        return np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)

    for _ in range(resamples):
        values = {}
        if width <= FID_BOOTSTRAP_WIDTH:
            values["fid"] = frechet_distance(*_weighted_stats(x, counts(len(x))), *_weighted_stats(y, counts(len(y))))
        vx, vy = counts(nx), counts(ny)  # pairs of distinct positions: a row drawn twice pairs with itself
        values["kid"] = ((vx @ k_xx @ vx - vx @ d_xx) / (nx * (nx - 1)) + (vy @ k_yy @ vy - vy @ d_yy) / (ny * (ny - 1))
                         - 2.0 * (vx @ k_xy @ vy) / (nx * ny))
        rx, ry = rng.integers(0, len(parts.px), len(parts.px)), rng.integers(0, len(parts.py), len(parts.py))
        for name, per_row in parts.rows.items():
            values[name] = per_row[ry if name in ("precision", "density") else rx].mean()
        if parts.t is not None:
            gx, gy = rng.integers(0, len(x), len(x)), rng.integers(0, len(y), len(y))
            values["authenticity"] = parts.authentic[gy].mean()
            c = parts.copying
            values["data_copying"] = copying_statistic(c["real_cell"][gx], c["real_d"][gx], c["fake_cell"][gy],
                                                       c["fake_d"][gy], c["cells"])
        for name, v in values.items():
            out.setdefault(name, []).append(float(v))
    return out


def _weighted_stats(f: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``N - 1``) of the rows of ``f`` each repeated ``w`` times (a resample)."""
    n = w.sum()
    mean = w @ f / n
    centred = f - mean
    return mean, (centred * w[:, None]).T @ centred / (n - 1)


def feature_space(name: str, data: DataBundle | None, device: Any, pm: Any = None, spec: Any = None,
                  cache: Path | None = None, settings: dict[str, Any] | None = None):
    """The registered feature space ``name``, built for ``data``'s inputs (or for ``spec``, a
    :class:`aepipe.components.ModelSpec`, where there is no dataset) with ``settings`` (its
    ``Config``'s fields; default: none) and prepared on ``device`` (a learning space trains on
    ``data.train``, or reloads what it trained from ``cache``, default the store's ``features/``
    folder); its ``features(x)`` then maps flat inputs in [0, 1] to ``(n, dim)`` features."""
    import torch
    from pydantic import ValidationError

    from aepipe.components import ModelSpec
    from aepipe.plugins import get_plugin_manager

    pm = pm or get_plugin_manager()
    cls = pm.registry.get("feature", name)
    if spec is None:
        if data is None:
            raise ConfigError(f"feature space '{name}': give a dataset or the inputs' shape")
        spec = ModelSpec(input_dim=data.input_dim, code_dim=0, image_shape=data.image_shape, n_classes=data.n_classes)
    if cls.needs_data and data is None:
        raise ConfigError(f"feature space '{name}' learns from a dataset: name one (aepipe fid --dataset NAME)")
    try:
        config = cls.Config.model_validate(settings or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"feature space '{name}': {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    space = cls(config, spec)
    space.prepare(data, torch.device(device), cache)
    return space


# --- `aepipe fid`: two sets of images, from files --------------------------------------------
