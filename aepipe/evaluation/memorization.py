"""Memorization measures: how novel generated rows are against the training rows (authenticity,
Alaa et al. 2022) and whether a model copies its training data (the data-copying statistic C_T,
Meehan et al. 2020). :mod:`aepipe.evaluation.generation` computes them with the other generation
metrics, where the training split's features are given."""

from __future__ import annotations

from typing import Any

import numpy as np

from aepipe.errors import ConfigError
from aepipe.evaluation.neighbours import nearest_rows

def authenticity_rows(train: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """Whether each generated row is *authentic* (Alaa et al. 2022, "How faithful is your synthetic
    data?"): farther from its nearest training row than that training row is from its own
    nearest distinct training row (repeated training rows count once). A copy of a training
    row (distance 0) is never authentic; the authenticity is the mean of these flags."""
    unique = np.unique(train, axis=0)
    if len(unique) < 2:
        raise ConfigError("authenticity needs at least 2 distinct training rows")
    to_train, nearest = nearest_rows(fake, unique)
    used = np.unique(nearest)
    radius = np.empty(len(unique))
    radius[used] = nearest_rows(unique[used], unique, skip=used)[0]
    return (to_train > radius[nearest]).astype(np.float64)


#: cells of the data-copying test's partition of the training set (fewer where the real rows are few)
COPYING_CELLS = 20
#: real (held-out) rows per cell at least: fewer real rows make fewer cells
COPYING_ROWS_PER_CELL = 40


def copying_cells(train: np.ndarray, real: np.ndarray, fake: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """What the data-copying test needs per row: the training set partitioned into cells by
    k-means (``min(20, N_real // 40)`` cells, at least 1), each real and generated row's cell (its
    nearest centre) and its distance to the nearest training row of that cell."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    cells = max(1, min(COPYING_CELLS, len(real) // COPYING_ROWS_PER_CELL, len(train)))
    if cells > 1:
        with threadpool_limits(1, user_api="openmp"):  # its OpenMP threads spin: 15x slower on a busy machine
            km = KMeans(n_clusters=cells, n_init=1, random_state=seed).fit(train)
        train_cell, real_cell, fake_cell = km.labels_, km.predict(real), km.predict(fake)
    else:
        train_cell, real_cell, fake_cell = (np.zeros(len(a), dtype=np.int64) for a in (train, real, fake))
    real_d, fake_d = np.full(len(real), np.inf), np.full(len(fake), np.inf)
    for c in range(cells):
        members = train[train_cell == c]
        for rows, cell_of, out in ((real, real_cell, real_d), (fake, fake_cell, fake_d)):
            which = np.flatnonzero(cell_of == c)
            if len(which) and len(members):
                out[which] = nearest_rows(rows[which], members)[0]
    return {"real_cell": real_cell, "real_d": real_d, "fake_cell": fake_cell, "fake_d": fake_d, "cells": cells}


def copying_statistic(real_cell: np.ndarray, real_d: np.ndarray, fake_cell: np.ndarray, fake_d: np.ndarray,
                      cells: int) -> float:
    """Meehan et al. (2020)'s data-copying statistic C_T from :func:`copying_cells`' rows: per cell,
    the Mann-Whitney U of the generated rows' distances to the cell's training rows against the
    real (held-out) rows' ones, z-scored under the null (``(U - nm/2 + 1/2) / sqrt(nm(n+m+1)/12)``
    with the reference code's continuity correction; ties count half); C_T is their average
    weighted by each cell's share of the real rows, over the cells that hold real rows and more
    than 20/M of the M generated rows (the paper's tau). Near 0: the samples lie as far from the
    training set as unseen data does; strongly negative (below -3, say): closer, i.e. copies;
    strongly positive: farther (samples off the data, which FID sees too)."""
    from scipy.stats import rankdata

    m, n = len(fake_d), len(real_d)
    tau = 20 / m
    total = weight = 0.0
    for c in range(int(cells)):
        q, p = fake_d[fake_cell == c], real_d[real_cell == c]
        if len(p) == 0 or len(q) / m <= tau:
            continue
        ranks = rankdata(np.concatenate([q, p]))
        u = ranks[: len(q)].sum() - len(q) * (len(q) + 1) / 2  # pairs in which the generated row is farther
        mean, std = len(q) * len(p) / 2 - 0.5, np.sqrt(len(q) * len(p) * (len(q) + len(p) + 1) / 12)
        share = len(p) / n
        total += share * (u - mean) / std
        weight += share
    return float(total / weight) if weight else 0.0
