"""From a dataset plugin's raw arrays to scaled, split tensors held on the device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aepipe.components import RawData
from aepipe.errors import ConfigError, DataError


@dataclass
class DataBundle:
    """Train/validation/test tensors on one device, flat ``(n, d)`` float32 in [0, 1]."""

    name: str
    x_train: torch.Tensor
    x_val: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None
    y_val: torch.Tensor | None
    y_test: torch.Tensor | None
    value_range: tuple[float, float]
    image_shape: tuple[int, ...] | None
    n_classes: int
    source: str = ""

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])


def scale(x: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Map raw values in ``value_range`` to [0, 1] (clipped), flattened to ``(n, d)`` float32."""
    lo, hi = value_range
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into train, validation and test indices."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n - n_test - n_val < 1:
        raise ConfigError(f"data: val_fraction + test_fraction leave no training examples out of {n}")
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def prepare(raw: RawData, name: str, val_fraction: float, test_fraction: float, seed: int, device: torch.device) -> DataBundle:
    """Scale, split (seeded) and move a dataset to ``device`` once."""
    lo, hi = raw.value_range
    if not hi > lo:
        raise DataError(f"dataset '{name}': value_range {raw.value_range} is empty")
    x = scale(raw.x, raw.value_range)
    y = None if raw.y is None else np.asarray(raw.y).astype(np.int64)
    if y is not None and len(y) != len(x):
        raise DataError(f"dataset '{name}': {len(x)} inputs but {len(y)} labels")
    if len(x) < 3:
        raise DataError(f"dataset '{name}': only {len(x)} examples")
    if raw.x_test is not None:
        tr, va, _ = split_indices(len(x), val_fraction, 0.0, seed)
        x_test = scale(raw.x_test, raw.value_range)
        y_test = None if raw.y_test is None else np.asarray(raw.y_test).astype(np.int64)
        parts = [(x[tr], None if y is None else y[tr]), (x[va], None if y is None else y[va]), (x_test, y_test)]
    else:
        tr, va, te = split_indices(len(x), val_fraction, test_fraction, seed)
        parts = [(x[i], None if y is None else y[i]) for i in (tr, va, te)]
    if len(parts[1][0]) == 0:  # no validation split asked for: validate on training data
        parts[1] = parts[0]
    if len(parts[2][0]) == 0:
        parts[2] = parts[1]

    def t(a: np.ndarray | None) -> torch.Tensor | None:
        if a is None:
            return None
        tensor = torch.as_tensor(a)
        if device.type == "cuda":  # one pinned, asynchronous copy; the data then stays on the GPU
            return tensor.pin_memory().to(device, non_blocking=True)
        return tensor.to(device)

    n_classes = raw.n_classes or (int(y.max()) + 1 if y is not None else 0)
    bundle = DataBundle(
        name=name,
        x_train=t(parts[0][0]),
        x_val=t(parts[1][0]),
        x_test=t(parts[2][0]),
        y_train=t(parts[0][1]),
        y_val=t(parts[1][1]),
        y_test=t(parts[2][1]),
        value_range=(float(lo), float(hi)),
        image_shape=tuple(raw.image_shape) if raw.image_shape else None,
        n_classes=n_classes,
        source=raw.source,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return bundle
