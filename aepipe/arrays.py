"""Arrays a user hands to aepipe (``encode``/``reconstruct`` inputs and labels, a dataset's file),
read and checked before any work: a real ``.npy`` file, numbers, at least one row, every value
finite (or the first bad one named by row and column), labels whole numbers in range. Each
failure is one :class:`DataError` line naming the file (or option) and what is wrong."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from aepipe.errors import DataError
from aepipe.files import size_text

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def load_npy(path: Path, what: str, mmap: bool = False, extra_per_value: int = 0) -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (``what`` names it in errors: ``--labels y.npy``),
    never unpickling anything; with ``mmap``, memory-mapped read-only (read as it is used).
    Its header is read first (:func:`read_header`): a file shorter than its header claims is
    refused, and so, unless memory-mapped, is one whose array (with ``extra_per_value`` bytes
    more per value: the copies the caller makes of it) is more than this process may allocate."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
            if head == NPY_MAGIC:
                fh.seek(0)
                shape, dtype = read_header(fh, what)
                data_start, size = fh.tell(), os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise DataError(f"{what}: cannot read: {exc.strerror or exc}") from None
    if head.startswith(ZIP_MAGIC):
        raise DataError(f"{what}: is a .npz archive; give one array as a .npy file (numpy.save)")
    if head != NPY_MAGIC:
        from aepipe.secrets import excerpt

        raise DataError(f"{what}: not a .npy file (it starts with {excerpt(head)}, not numpy's header); "
                        "write it with numpy.save")
    nbytes = _count(shape) * dtype.itemsize
    if not mmap:
        check_claim(shape, dtype, what, extra_per_value)
    if size - data_start < nbytes:
        raise DataError(f"{what}: a damaged .npy file: its header claims shape {shape} {dtype} = {size_text(nbytes)}, "
                        f"but it holds {size_text(max(0, size - data_start))} of data")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        # the last: memory-mapped
        if "pickled" in str(exc) or "Object arrays" in str(exc) or "Python objects" in str(exc):
            raise DataError(
                f"{what}: holds Python objects (dtype object), which aepipe does not unpickle; save numbers"
            ) from None
        raise DataError(f"{what}: a damaged .npy file: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{what}: a damaged .npy file: {exc}") from None


def read_header(fh: BinaryIO, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a ``.npy`` stream's header claims (numpy's own reader of the magic and
    the header; nothing else is read): ``fh`` is left at the first byte of data. A damaged header
    is one DataError naming ``what``."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(fh)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read(fh)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise DataError(f"{what}: a damaged .npy header: {' '.join(str(exc).split())[:200]}") from None
    return tuple(int(d) for d in shape), np.dtype(dtype)


def check_claim(shape: tuple[int, ...], dtype: np.dtype, what: str, extra_per_value: int = 0) -> None:
    """Refuse an array of ``shape`` and ``dtype`` (as a header claims it), with
    ``extra_per_value`` bytes more per value, that is more than this process may allocate
    (:func:`aepipe.limits.memory_budget`): one DataError naming ``what`` and the sizes."""
    from aepipe.limits import memory_budget

    values = _count(shape)
    nbytes = values * dtype.itemsize
    need = nbytes + values * extra_per_value
    budget = memory_budget("cpu")
    if budget.bytes is not None and need > budget.bytes:
        working = f" ({size_text(need)} with the copies made of it)" if need != nbytes else ""
        raise DataError(f"{what}: header claims shape {shape} {dtype} = {size_text(nbytes)}{working}, more than the "
                        f"{size_text(budget.bytes)} this process may allocate ({budget.limit})")


def check_npz_member(npz: Any, key: str, what: str, extra_per_value: int = 0) -> None:
    """Refuse the member ``key`` of an open ``.npz`` archive (``numpy.load``'s NpzFile) whose
    header claims more than this process may allocate (:func:`check_claim`), before it is read:
    a compressed member of zeros claims a thousand times its size on disk."""
    try:
        with npz.zip.open(f"{key}.npy") as fh:
            shape, dtype = read_header(fh, f"{what}: array '{key}'")
    except KeyError:
        return  # not stored as KEY.npy: numpy's own error when it is read
    check_claim(shape, dtype, f"{what}: array '{key}'", extra_per_value)


def _count(shape: tuple[int, ...]) -> int:
    """The number of values of ``shape``, in Python integers (numpy's product would overflow)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _position(index: tuple[int, ...]) -> str:
    if len(index) == 1:
        return f"value {index[0]}"
    rest = index[1:]
    return (
        f"row {index[0]}, column {rest[0]}"
        if len(rest) == 1
        else f"row {index[0]}, position {tuple(int(i) for i in rest)}"
    )


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
        raise DataError(f"{what}: {_position((index[0] + first_row, *index[1:]))} is {value} (NaN and infinite values "
                        "are not accepted)")


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
        raise DataError(
            f"{what}: label {int(np.argmax(y))} is {int(y.max())}; this model has classes 0..{n_classes - 1}"
        )
    return y
