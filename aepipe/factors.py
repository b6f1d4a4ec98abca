"""A dataset's ground-truth factors (for the disentanglement metrics), checked against its rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from aepipe.components import RawData
from aepipe.errors import DataError


def checked_factors(raw: RawData, name: str) -> tuple[np.ndarray | None, np.ndarray | None, tuple[str, ...]]:
    """The dataset's ground-truth factors (training rows, its own test rows) as int64 ``(n, K)``
    arrays and their names, checked against the rows; ``(None, None, ())`` where it has none."""
    if raw.factors is None:
        if raw.factors_test is not None:
            raise DataError(f"dataset '{name}': factors_test given without factors")
        return None, None, ()

    def checked(a: np.ndarray, rows: Any, what: str) -> np.ndarray:
        a = np.asarray(a)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or len(a) != len(rows):
            raise DataError(f"dataset '{name}': {what} of shape {a.shape} for {len(rows)} rows "
                            f"(expected ({len(rows)}, K))")
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0):
            raise DataError(f"dataset '{name}': {what} must be non-negative integer indices "
                            f"(found {a.dtype}, min {a.min()})")
        return a.astype(np.int64)

    factors = checked(raw.factors, raw.x, "factors")
    names = tuple(raw.factor_names) or tuple(f"factor{i}" for i in range(factors.shape[1]))
    if len(names) != factors.shape[1]:
        raise DataError(f"dataset '{name}': {len(names)} factor_names for {factors.shape[1]} factor columns")
    factors_test = None
    if raw.x_test is not None:
        if raw.factors_test is None:
            raise DataError(f"dataset '{name}': factors given for the training rows but not for its test split "
                            "(factors_test)")
        factors_test = checked(raw.factors_test, raw.x_test, "factors_test")
        if factors_test.shape[1] != factors.shape[1]:
            raise DataError(f"dataset '{name}': factors_test has {factors_test.shape[1]} columns, "
                            f"factors {factors.shape[1]}")
    return factors, factors_test, names
