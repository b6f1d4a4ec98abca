"""From a dataset plugin's raw inputs to split, scaled batches on the training device.

Two paths feed the same loop (``data.in_memory``):

- **in memory**: each split is one tensor on the device, batched by index. uint8 inputs (images)
  stay uint8, a quarter of float32's memory, and are scaled batch by batch; other inputs are
  scaled to float32 once.
- **streamed**: the rows stay where the dataset keeps them (image files, a memory-mapped array,
  a Hugging Face table). A ``torch.utils.data.DataLoader`` reads each batch in worker
  processes, pinned for a GPU and read ahead, and the batch is scaled on the device.

Both paths draw the same split and the same batches in the same order: a run's results do not
depend on the path, up to float rounding of non-uint8 inputs (scaled in float64 in memory,
float32 when streamed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from aepipe.components import RawData, Rows
from aepipe.errors import ConfigError, DataError
from aepipe.factors import checked_factors

Batch = tuple[torch.Tensor, "torch.Tensor | None"]
#: rows read per chunk when a split is loaded into memory
CHUNK = 2048


@dataclass(frozen=True)
class Feed:
    """How streamed batches are read: worker processes, batches each reads ahead, pinned memory."""

    workers: int = 0
    prefetch: int = 2
    pin: bool = False

    @classmethod
    def for_device(cls, workers: int | None, prefetch: int, device: torch.device) -> "Feed":
        return cls(default_workers(device) if workers is None else workers, prefetch, device.type == "cuda")


def default_workers(device: torch.device) -> int:
    """DataLoader workers when ``data.workers`` is not set. Training on a GPU leaves the CPU
    cores to reading: one worker per core beyond the first, at most 8. Training on the CPU uses
    every core already (torch's threads): a worker per 4 cores, at most 4, and none on 2 cores or
    fewer, where a worker beside torch's threads made a streamed MLP epoch 1.4x slower than
    reading in the training process (benchmarks/streaming.py)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else max(1, min(4, cores // 4))


class Split:
    """One split's examples: ``len(split)`` rows, labels ``y`` (a tensor on the device, or None)
    and batches of inputs as float32 ``(b, d)`` tensors in [0, 1] on the device.

    ``factors``: the rows' ground-truth factors where the dataset gives them, an int64 numpy
    array ``(len(split), K)`` on the CPU in the split's row order (row i of ``batches`` and
    ``take(i)`` has factors ``factors[i]``), held or streamed alike; ``None`` otherwise."""

    streamed, clip = False, True  # clip: scaled values are clipped to [0, 1] (``RawData.clip``)
    factors: np.ndarray | None = None

    def __init__(self, y: torch.Tensor | None, value_range: tuple[float, float], device: torch.device):
        self.y, self.value_range, self.device = y, value_range, device
        lo, hi = value_range
        self._lo, self._span = float(lo), float(hi - lo)

    def __len__(self) -> int:
        raise NotImplementedError

    def _scale(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw rows (uint8 or float, on the device) as flat float32 in [0, 1]."""
        x = (raw.reshape(raw.shape[0], -1).float() - self._lo) / self._span
        return x.clamp_(0.0, 1.0) if self.clip else x

    def take(self, positions: torch.Tensor) -> Batch:
        """The rows at ``positions`` (0 ... len - 1) of this split, and their labels."""
        raise NotImplementedError

    def ordered(self, groups: Iterable[torch.Tensor]) -> Iterator[Batch]:
        """One batch per group of positions, in the groups' order (a training epoch's order)."""
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The split in order, ``batch_size`` rows at a time (evaluation)."""
        return self.ordered(torch.arange(i, min(i + batch_size, len(self))) for i in range(0, len(self), batch_size))

    def head(self, n: int) -> Batch:
        """The first ``n`` rows (fewer if the split is smaller)."""
        return self.take(torch.arange(min(n, len(self))))

    def stored(self, limit: int | None = None) -> np.ndarray:
        """The rows as they are kept (uint8 images, or scaled floats), on the CPU: the first ``limit``."""
        raise NotImplementedError

    @property
    def x(self) -> torch.Tensor:
        """The whole split as one float32 ``(n, d)`` tensor on the device (held splits only)."""
        raise NotImplementedError


class HeldSplit(Split):
    """A split held as one tensor on the device; uint8 rows are scaled batch by batch."""

    def __init__(self, rows: torch.Tensor, y: torch.Tensor | None, value_range: tuple[float, float],
                 device: torch.device):
        super().__init__(y, value_range, device)
        self.rows = rows
        self.prescaled = rows.dtype == torch.float32  # scaled once, when loaded

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def _scale(self, raw: torch.Tensor) -> torch.Tensor:
        return raw if self.prescaled else super()._scale(raw)

    def take(self, positions: torch.Tensor) -> Batch:
        positions = positions.to(self.device)
        return self._scale(self.rows[positions]), None if self.y is None else self.y[positions]

    def ordered(self, groups: Iterable[torch.Tensor]) -> Iterator[Batch]:
        return (self.take(g) for g in groups)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for i in range(0, len(self), batch_size):
            yield self._scale(self.rows[i: i + batch_size]), None if self.y is None else self.y[i: i + batch_size]

    def stored(self, limit: int | None = None) -> np.ndarray:
        return self.rows[:limit].cpu().numpy()

    @property
    def x(self) -> torch.Tensor:
        return self._scale(self.rows)


class _Failed:
    """A worker's error, carried back as a value: the training process raises it as one line."""

    def __init__(self, message: str):
        self.message = message

    def error(self, dataset: str) -> DataError:
        return DataError(f"dataset '{dataset}': {self.message}")


class _Reader(torch.utils.data.Dataset):
    """Runs in DataLoader workers: the rows at a group of positions, as one array."""

    def __init__(self, rows: Any, index: np.ndarray):
        self.rows, self.index = rows, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, positions: np.ndarray) -> Any:
        try:
            return positions, np.ascontiguousarray(self.rows[self.index[positions]])
        except DataError as exc:
            return _Failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a dataset's own failure, named in one line
            return _Failed(f"reading rows failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


class _Groups(torch.utils.data.Sampler):
    """The groups of positions the loader reads next: set before each pass."""

    def __init__(self) -> None:
        self.groups: Iterable[np.ndarray] = ()

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.groups)


class StreamedSplit(Split):
    """A split whose rows stay where the dataset keeps them, read batch by batch through a
    DataLoader (workers, pinned memory, reading ahead)."""

    streamed = True

    def __init__(self, rows: np.ndarray | Rows, index: np.ndarray, y: torch.Tensor | None,
                 value_range: tuple[float, float],
                 device: torch.device, feed: Feed, name: str, keep_workers: bool = False):
        super().__init__(y, value_range, device)
        self.rows, self.index, self.feed, self.name = rows, index, feed, name
        self.keep_workers = keep_workers  # the training split: its workers live across epochs
        self._sampler = _Groups()
        self._loader: torch.utils.data.DataLoader | None = None

    def __len__(self) -> int:
        return len(self.index)

    def _read(self, positions: np.ndarray) -> torch.Tensor:
        out = _Reader(self.rows, self.index)[positions]
        if isinstance(out, _Failed):
            raise out.error(self.name)
        return torch.from_numpy(out[1])

    def take(self, positions: torch.Tensor) -> Batch:
        raw = self._read(positions.cpu().numpy())
        positions = positions.to(self.device)
        return self._scale(raw.to(self.device)), None if self.y is None else self.y[positions]

    def loader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            f = self.feed
            extra = {"prefetch_factor": f.prefetch, "persistent_workers": self.keep_workers} if f.workers else {}
            # its own generator: workers' seeds are not drawn from the training random stream
            self._loader = torch.utils.data.DataLoader(_Reader(self.rows, self.index), batch_size=None,
                                                       sampler=self._sampler, num_workers=f.workers, pin_memory=f.pin,
                                                       generator=torch.Generator(), **extra)
        return self._loader

    def ordered(self, groups: Iterable[torch.Tensor]) -> Iterator[Batch]:
        self._sampler.groups = (g.cpu().numpy() for g in groups)
        for item in self.loader():
            if isinstance(item, _Failed):
                raise item.error(self.name)
            positions, raw = item
            x = self._scale(raw.to(self.device, non_blocking=self.feed.pin))
            yield x, None if self.y is None else self.y[positions.to(self.device, non_blocking=self.feed.pin)]

    def stored(self, limit: int | None = None) -> np.ndarray:
        n = len(self) if limit is None else min(limit, len(self))
        return self._read(np.arange(n)).numpy()

    @property
    def x(self) -> torch.Tensor:
        raise DataError(f"dataset '{self.name}' is streamed (data.in_memory): it has no tensor of a whole split; "
                        "read it with split.batches(batch_size), or set data.in_memory = true")


@dataclass
class DataBundle:
    """The train, validation and test splits of one dataset on one device; ``x_train`` ... are
    the held splits' whole tensors, kept for code that wants them."""

    name: str
    train: Split
    val: Split
    test: Split
    value_range: tuple[float, float]
    image_shape: tuple[int, ...] | None
    n_classes: int
    input_dim: int
    source: str = ""
    streamed: bool = False
    reason: str = ""  # why the data is held or streamed
    factor_names: tuple[str, ...] = ()  # the columns of each split's ``factors`` (none: no factors)

    @property
    def x_train(self) -> torch.Tensor:
        return self.train.x

    @property
    def x_val(self) -> torch.Tensor:
        return self.val.x

    @property
    def x_test(self) -> torch.Tensor:
        return self.test.x

    @property
    def y_train(self) -> torch.Tensor | None:
        return self.train.y

    @property
    def y_val(self) -> torch.Tensor | None:
        return self.val.y

    @property
    def y_test(self) -> torch.Tensor | None:
        return self.test.y


def batches(x: Split | torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1024) -> Iterator[Batch]:
    """A split's batches, or a tensor's (and its labels') in order: helpers that evaluate a
    model take either."""
    if isinstance(x, Split):
        yield from x.batches(batch_size)
        return
    for i in range(0, x.shape[0], batch_size):
        yield x[i: i + batch_size], None if y is None else y[i: i + batch_size]


def scale(x: np.ndarray, value_range: tuple[float, float], clip: bool = True) -> np.ndarray:
    """Map raw values in ``value_range`` to [0, 1] (clipped where ``clip``), flattened to ``(n, d)`` float32."""
    lo, hi = value_range
    x = (np.asarray(x, dtype=np.float64).reshape(len(x), -1) - lo) / (hi - lo)
    return (np.clip(x, 0.0, 1.0) if clip else x).astype(np.float32)


def unscale(x: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """The inverse of :func:`scale`: values in [0, 1] back in the dataset's raw units, in ``x``'s dtype."""
    lo, hi = value_range
    return lo + np.asarray(x) * (hi - lo)


def split_indices(n: int, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into train, validation and test indices."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n - n_test - n_val < 1:
        raise ConfigError(f"data: val_fraction + test_fraction leave no training examples out of {n}")
    return perm[n_test + n_val:], perm[n_test: n_test + n_val], perm[:n_test]


def _held_bytes(x: Any) -> int:
    """Bytes the rows take held in memory: uint8 as they are, anything else as float32."""
    return int(np.prod(x.shape)) * (1 if np.dtype(x.dtype) == np.uint8 else 4)


def choose_path(in_memory: str | bool, need: int, device: torch.device, fraction: float) -> tuple[bool, str]:
    """Whether to hold the data (``need`` bytes) on ``device``, and why."""
    from aepipe.limits import available_bytes, check_fits, gb

    if in_memory is True:
        check_fits(need, f"data.in_memory = true: the data ({gb(need)})", device,
                   'set data.in_memory = false (or "auto") to stream it')
        return True, "data.in_memory = true"
    if in_memory is False:
        return False, "data.in_memory = false"
    free = available_bytes(device)
    if free is None:
        return True, f"auto: {gb(need)}; the free memory of {device.type} is unknown, so it is held"
    verdict = "fits in" if need <= fraction * free else "is more than"
    return need <= fraction * free, f"auto: {gb(need)} {verdict} {fraction:g} of the {gb(free)} free on {device.type}"


def _rows_in_memory(x: np.ndarray | Rows, index: np.ndarray, value_range: tuple[float, float], feed: Feed, name: str,
                    clip: bool = True) -> np.ndarray:
    """The rows ``index`` of ``x`` as one array: uint8 kept, anything else scaled to float32.
    An array in memory is indexed at once; a memory-mapped array or :class:`Rows` are read in
    chunks of ascending index (through workers for Rows), never holding more than the result."""
    uint8 = np.dtype(x.dtype) == np.uint8
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap):
        rows = x[index]
        return rows.reshape(len(rows), -1) if uint8 else scale(rows, value_range, clip)
    d = int(np.prod(x.shape[1:]))
    out = np.empty((len(index), d), dtype=np.uint8 if uint8 else np.float32)
    order = np.argsort(index, kind="stable")
    chunks = [order[i: i + CHUNK] for i in range(0, len(order), CHUNK)]
    lazy = not isinstance(x, np.ndarray)
    workers = feed.workers if lazy and len(index) > CHUNK else 0
    loader = torch.utils.data.DataLoader(_Reader(x, index), batch_size=None, sampler=chunks, num_workers=workers,
                                         generator=torch.Generator(),
                                         **({"prefetch_factor": feed.prefetch} if workers else {}))
    for item in loader:
        if isinstance(item, _Failed):
            raise item.error(name)
        positions, raw = item
        raw = raw.numpy().reshape(len(positions), -1)
        out[positions.numpy()] = raw if uint8 else scale(raw, value_range, clip)
    return out


def prepare(raw: RawData, name: str, val_fraction: float, test_fraction: float, seed: int, device: torch.device,
            in_memory: str | bool = True, memory_fraction: float = 0.5, feed: Feed | None = None) -> DataBundle:
    """Split (seeded) and either hold a dataset on ``device`` or stream it (``in_memory``)."""
    lo, hi = raw.value_range
    if not hi > lo:
        raise DataError(f"dataset '{name}': value_range {raw.value_range} is empty")
    x, feed = raw.x, feed or Feed()
    y = None if raw.y is None else np.asarray(raw.y).astype(np.int64)
    if y is not None and len(y) != len(x):
        raise DataError(f"dataset '{name}': {len(x)} inputs but {len(y)} labels")
    if len(x) < 3:
        raise DataError(f"dataset '{name}': only {len(x)} examples")
    if raw.x_test is not None and tuple(raw.x_test.shape[1:]) != tuple(x.shape[1:]):
        raise DataError(f"dataset '{name}': test rows of shape {tuple(raw.x_test.shape[1:])}, training rows "
                        f"{tuple(x.shape[1:])}")
    y_test = None if raw.y_test is None else np.asarray(raw.y_test).astype(np.int64)
    factors, factors_test, factor_names = checked_factors(raw, name)
    if raw.x_test is not None:
        tr, va, _ = split_indices(len(x), val_fraction, 0.0, seed)
        parts = [(x, tr, y, factors), (x, va, y, factors),
                 (raw.x_test, np.arange(len(raw.x_test)), y_test, factors_test)]
    else:
        parts = [(x, i, y, factors) for i in split_indices(len(x), val_fraction, test_fraction, seed)]
    need = _held_bytes(x) + (0 if raw.x_test is None else _held_bytes(raw.x_test))
    held, reason = choose_path(in_memory, need, device, memory_fraction)
    value_range = (float(lo), float(hi))

    def labels(a: np.ndarray | None, index: np.ndarray) -> torch.Tensor | None:
        return None if a is None else _to_device(torch.as_tensor(a[index]), device)
    splits: list[Split] = []
    for k, (rows, index, ys, fs) in enumerate(parts):
        if len(index) == 0:  # no validation (test) split asked for: use the one before
            splits.append(splits[-1])
            continue
        if held:
            array = _rows_in_memory(rows, index, value_range, feed, name, raw.clip)
            splits.append(HeldSplit(_to_device(torch.from_numpy(array), device), labels(ys, index), value_range,
                                    device))
        else:
            splits.append(StreamedSplit(rows, np.asarray(index, dtype=np.int64), labels(ys, index), value_range, device,
                                        feed, name,
                                        keep_workers=k == 0))
        splits[-1].factors, splits[-1].clip = None if fs is None else fs[index], raw.clip
    n_classes = raw.n_classes or (int(y.max()) + 1 if y is not None else 0)
    # the streamed path is worth a line on the console (``aepipe train`` shows INFO); held, a debug note
    logging.getLogger("aepipe.data").log(logging.DEBUG if held else logging.INFO, "data '%s': %s (%s)", name,
                                         "held in memory" if held
                                         else f"streamed by {feed.workers} DataLoader worker(s)" if feed.workers
                                         else "streamed, read in the training process (data.workers = 0)", reason)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return DataBundle(name=name, train=splits[0], val=splits[1], test=splits[2], value_range=value_range,
                      image_shape=tuple(raw.image_shape) if raw.image_shape else None, n_classes=n_classes,
                      input_dim=int(np.prod(x.shape[1:])), source=raw.source, streamed=not held, reason=reason,
                      factor_names=factor_names)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":  # one pinned, asynchronous copy; the data then stays on the GPU
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
