"""Nearest-neighbour distances between rows of features, in blocks of :data:`BLOCK` rows (a
block's distance matrix is all that is held): each row's k-NN radius (precision, recall, density
and coverage) and each row's nearest row of another set (memorization)."""

from __future__ import annotations

import numpy as np

from aepipe.errors import ConfigError

#: query rows per block of a distance computation (a block is ``BLOCK x N`` float64 values)
BLOCK = 1024


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and ``b`` (``scikit-learn``'s, as ``prdc``)."""
    from sklearn.metrics import pairwise_distances

    return pairwise_distances(a, b, metric="euclidean")


def knn_radii(f: np.ndarray, k: int) -> np.ndarray:
    """Each row's distance to its ``k``-th nearest other row of ``f`` (``prdc``'s radius: the
    ``k + 1``-th smallest distance, the row itself being the first); a row's copies count, so a
    row repeated more than ``k`` times has a radius of 0 (and :func:`prdc_rows` takes a ball's
    edge as inside it)."""
    if len(f) <= k:
        raise ConfigError(
            f"generation metrics with k = {k} neighbours need more than {k} rows in each set, got {len(f)}"
        )
    radii = np.empty(len(f))
    for lo in range(0, len(f), BLOCK):
        block = distances(f[lo: lo + BLOCK], f)
        radii[lo: lo + BLOCK] = np.partition(block, k, axis=1)[:, k]  # the row itself is the 0-th
    return radii


def nearest_rows(query: np.ndarray, ref: np.ndarray, skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``query``, the distance to its nearest row of ``ref`` and that row's index;
    ``skip``: per query row, an index of ``ref`` left out (the row itself)."""
    dist, index = np.empty(len(query)), np.empty(len(query), dtype=np.int64)
    for lo in range(0, len(query), BLOCK):
        d = distances(query[lo: lo + BLOCK], ref)
        if skip is not None:
            d[np.arange(len(d)), skip[lo: lo + BLOCK]] = np.inf
        index[lo: lo + BLOCK] = d.argmin(axis=1)
        dist[lo: lo + BLOCK] = d[np.arange(len(d)), index[lo: lo + BLOCK]]
    return dist, index
