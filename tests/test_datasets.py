"""Dataset plugins: embedded data, IDX files written by the test, user files; split and scaling."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from aepipe.config import resolve
from aepipe.data import split_indices
from aepipe.errors import DataError
from aepipe.training import load_data

from aepipe_plugins.datasets.sources import read_idx


def write_idx(path, array: np.ndarray, gz: bool = False):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def load(pm, **data):
    pipeline = resolve(pm, tree={"variant": "vanilla", "data": data})
    return load_data(pipeline, torch.device("cpu"))


def test_digits_is_scaled_split_and_labelled(aepipe_pm):
    d = load(aepipe_pm, name="digits")
    n = d.x_train.shape[0] + d.x_val.shape[0] + d.x_test.shape[0]
    assert n == 1797 and d.input_dim == 64 and d.image_shape == (1, 8, 8) and d.n_classes == 10
    assert d.x_test.shape[0] == round(1797 * 0.2) and d.x_val.shape[0] == round(1797 * 0.1)
    for x in (d.x_train, d.x_val, d.x_test):
        assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(d.x_train.max()) == 1.0
    assert set(d.y_train.tolist()) == set(range(10))
    again = load(aepipe_pm, name="digits")
    assert torch.equal(d.x_test, again.x_test)
    other = load(aepipe_pm, name="digits", split_seed=1)
    assert not torch.equal(d.x_test, other.x_test)


def test_split_is_a_partition():
    tr, va, te = split_indices(100, 0.1, 0.2, seed=3)
    assert len(tr) == 70 and len(va) == 10 and len(te) == 20
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(100))


def test_mnist5k(aepipe_pm):
    d = load(aepipe_pm, name="mnist5k", limit=500)
    assert d.input_dim == 784 and d.image_shape == (1, 28, 28)
    assert d.x_train.shape[0] + d.x_val.shape[0] + d.x_test.shape[0] == 500
    assert float(d.x_train.max()) == 1.0


@pytest.mark.parametrize("name,gz", [("mnist", False), ("fashion-mnist", True)])
def test_idx_folder(aepipe_pm, tmp_path, name, gz):
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, 256, (30, 6, 5)), rng.integers(0, 10, 30)
    xt, yt = rng.integers(0, 256, (8, 6, 5)), rng.integers(0, 10, 8)
    write_idx(tmp_path / "train-images-idx3-ubyte", xs, gz)
    write_idx(tmp_path / "train-labels-idx1-ubyte", ys, gz)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", xt, gz)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", yt, gz)
    d = load(aepipe_pm, name=name, path=str(tmp_path), val_fraction=0.2)
    assert d.image_shape == (1, 6, 5) and d.input_dim == 30
    assert d.x_test.shape[0] == 8  # the dataset's own test split
    assert np.allclose(d.x_test.numpy(), xt.reshape(8, -1) / 255.0, atol=1e-6)
    assert d.y_test.tolist() == yt.tolist()
    assert d.x_train.shape[0] + d.x_val.shape[0] == 30


def test_idx_errors(tmp_path, aepipe_pm):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x03garbage")
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        read_idx(bad)
    short = write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8))
    short.write_bytes(short.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"header says \(4, 2\) \(8 values\) but the file holds 6"):
        read_idx(short)
    with pytest.raises(DataError, match=r"test_idx_errors0/train-images-idx3-ubyte: not an unsigned-byte IDX"):
        load(aepipe_pm, name="mnist", path=str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        DataError, match=r"dataset 'mnist': .*empty/train-images-idx3-ubyte\[\.gz\] not found \(set data\.path"
    ):
        load(aepipe_pm, name="mnist", path=str(empty))


def test_user_files(aepipe_pm, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5))
    y = rng.integers(0, 3, 40)
    np.save(tmp_path / "x.npy", x)
    d = load(aepipe_pm, name="file", path=str(tmp_path / "x.npy"))
    assert d.input_dim == 5 and d.y_train is None and d.n_classes == 0
    assert d.value_range == (pytest.approx(x.min()), pytest.approx(x.max()))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load(aepipe_pm, name="file", path=str(tmp_path / "d.npz"), value_range=[-10, 10])
    assert d.n_classes == 3 and d.value_range == (-10.0, 10.0)
    table = np.column_stack([y, x])
    np.savetxt(tmp_path / "t.csv", table, delimiter=",", header="label,a,b,c,d,e", comments="")
    d = load(aepipe_pm, name="file", path=str(tmp_path / "t.csv"), label_column=0, skip_header=1)
    assert d.input_dim == 5 and d.n_classes == 3
    images = rng.integers(0, 255, (20, 4, 4))
    np.save(tmp_path / "img.npy", images)
    d = load(aepipe_pm, name="file", path=str(tmp_path / "img.npy"))
    assert d.image_shape == (1, 4, 4)
    with pytest.raises(DataError, match=r"image_shape \(1, 3, 3\) does not fit rows of 16 values"):
        load(aepipe_pm, name="file", path=str(tmp_path / "img.npy"), image_shape=[1, 3, 3])
    with pytest.raises(DataError, match="not found"):
        load(aepipe_pm, name="file", path=str(tmp_path / "none.npy"))
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load(aepipe_pm, name="file", path=str(tmp_path / "x.txt"))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(DataError, match=r"row 0, column 1 is nan \(NaN and infinite values are not accepted\)"):
        load(aepipe_pm, name="file", path=str(tmp_path / "nan.npy"))
