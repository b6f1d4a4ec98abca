"""Arrays a user hands to aepipe (``encode``/``reconstruct`` inputs and labels, a dataset's file),
read and checked before any work: a real ``.npy`` file, numbers, at least one row, every value
finite (or the first bad one named by row and column), labels whole numbers in range. Each
failure is one :class:`DataError` line naming the file (or option) and what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aepipe.errors import DataError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def load_npy(path: Path, what: str, mmap: bool = False) -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (``what`` names it in errors: ``--labels y.npy``),
    never unpickling anything; with ``mmap``, memory-mapped read-only (read as it is used)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{what}: cannot read: {exc.strerror or exc}") from None
    if head.startswith(ZIP_MAGIC):
        raise DataError(f"{what}: is a .npz archive; give one array as a .npy file (numpy.save)")
    if head != NPY_MAGIC:
        from aepipe.secrets import excerpt

        raise DataError(f"{what}: not a .npy file (it starts with {excerpt(head)}, not numpy's header); "
                        "write it with numpy.save")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        if "pickled" in str(exc) or "Object arrays" in str(exc) or "Python objects" in str(exc):  # the last: memory-mapped
            raise DataError(f"{what}: holds Python objects (dtype object), which aepipe does not unpickle; save numbers") from None
        raise DataError(f"{what}: a damaged .npy file: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{what}: a damaged .npy file: {exc}") from None


def _position(index: tuple[int, ...]) -> str:
    if len(index) == 1:
        return f"value {index[0]}"
    rest = index[1:]
    return f"row {index[0]}, column {rest[0]}" if len(rest) == 1 else f"row {index[0]}, position {tuple(int(i) for i in rest)}"


def _not_numbers(a: np.ndarray) -> str | None:
    """What ``a`` holds instead of numbers, or None."""
    if a.dtype.kind in "biuf":
        return None
    return "text" if a.dtype.kind in "US" else f"dtype {a.dtype}"


def check_values(x: np.ndarray, what: str, min_ndim: int = 2) -> np.ndarray:
    """``x`` as float64 if it holds at least one row of finite numbers (rows first). A
    memory-mapped array is returned as it is, its shape checked: :func:`finite_range` checks its
    values a chunk at a time."""
    if (other := _not_numbers(x)) is not None:
        raise DataError(f"{what}: holds {other}, not numbers")
    if x.ndim < min_ndim:
        raise DataError(f"{what}: expected one example per row, got an array of shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{what}: holds no rows (shape {x.shape})")
    if x.size == 0:
        raise DataError(f"{what}: rows of no values (shape {x.shape})")
    if isinstance(x, np.memmap):  # left on disk: its values are checked a chunk at a time by finite_range
        return x
    x = x.astype(np.float64, copy=False)
    _check_finite(x, what, 0)
    return x


def check_rows(raw: np.ndarray, what: str) -> np.ndarray:
    """Inputs to a model (``encode``/``reconstruct``, a served request): :func:`check_values`,
    a single 1-D array taken as one row."""
    return check_values(raw[None] if raw.ndim == 1 else raw, what)


def check_width(x: np.ndarray, input_dim: int, what: str, whose: str) -> None:
    """Refuse rows that do not hold ``input_dim`` values (in any shape): ``whose`` names the
    model (``run ID``) in the message."""
    width = int(np.prod(x.shape[1:]))
    if width != input_dim:
        raise DataError(f"{what}: rows of {width} values; {whose} expects {input_dim}")


def _check_finite(x: np.ndarray, what: str, first_row: int) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        value = x[index]
        raise DataError(f"{what}: {_position((index[0] + first_row, *index[1:]))} is {value} (NaN and infinite values are not accepted)")


#: values read at a time by :func:`finite_range`
CHUNK_VALUES = 1 << 24


def finite_range(x: np.ndarray, what: str) -> tuple[float, float]:
    """The smallest and largest value of ``x`` (rows first), every value checked finite, read a
    chunk of rows at a time: a memory-mapped array is never held whole."""
    rows = max(1, CHUNK_VALUES // max(1, int(np.prod(x.shape[1:]))))
    lo, hi = np.inf, -np.inf
    for start in range(0, len(x), rows):
        chunk = np.asarray(x[start: start + rows])
        if chunk.dtype.kind == "f":
            _check_finite(chunk, what, start)
        lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    return lo, hi


def check_labels(y: np.ndarray, what: str, n_rows: int | None = None, n_classes: int | None = None) -> np.ndarray:
    """``y`` as int64 class labels, one per row: whole numbers >= 0 (and < ``n_classes``)."""
    if (other := _not_numbers(y)) is not None:
        raise DataError(f"{what}: labels hold {other}, not whole numbers")
    if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise DataError(f"{what}: labels must be one per row, got an array of shape {y.shape}")
    y = y.reshape(-1)
    if n_rows is not None and len(y) != n_rows:
        raise DataError(f"{what}: {len(y)} labels for {n_rows} rows")
    if len(y) == 0:
        raise DataError(f"{what}: holds no labels")
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            i = int(np.argmin(whole))
            raise DataError(f"{what}: label {i} is {y[i]}; labels are whole numbers 0, 1, 2, ...")
    y = y.astype(np.int64)
    low = int(y.min())
    if low < 0:
        raise DataError(f"{what}: label {int(np.argmin(y))} is {low}; labels are 0, 1, 2, ...")
    if n_classes is not None and int(y.max()) >= n_classes:
        raise DataError(f"{what}: label {int(np.argmax(y))} is {int(y.max())}; this model has classes 0..{n_classes - 1}")
    return y
