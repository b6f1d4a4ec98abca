"""Data as it is (issue 19, item 5): every image mode Pillow reads keeps its real range on the
way to 0-255 (16-bit from 0-65535; 32-bit integer and float images from their own minimum and
maximum) or is refused by name; an empty class folder keeps every label and is named in a
warning; an error about a file's contents quotes at most a short, masked excerpt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aepipe.config import resolve
from aepipe.errors import DataError
from aepipe.secrets import excerpt
from aepipe.training import load_data
from aepipe_plugins.datasets.images import ImageDataWarning, to_chw


def _load(pm, **data):
    return load_data(
        resolve(pm, tree={"variant": "conv", "data": {"test_fraction": 0.25, "val_fraction": 0.25, **data}}),
        torch.device("cpu"),
    )


def _folder(tmp_path: Path, arrays: list[np.ndarray], suffix: str) -> Path:
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(root / f"{i}{suffix}")
    return root


def _values_seen(pm, root: Path) -> set[tuple]:
    data = _load(pm, name="imagefolder", path=str(root), channels=1)
    x = torch.cat([data.x_train, data.x_val, data.x_test]).numpy()
    return {tuple(np.rint(row * 255.0).astype(int)) for row in x.reshape(len(x), -1)}


def test_a_16_bit_greyscale_png_is_scaled_from_its_full_range(aepipe_pm, tmp_path):
    """Before: Pillow's conversion clipped every value over 255, so these became all 255."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 65536, (6, 5)).astype(np.uint16) for _ in range(4)]
    arrays[0][0, :3] = [0, 257 * 100, 65535]
    root = _folder(tmp_path, arrays, ".png")
    from PIL import Image

    with Image.open(root / "0.png") as image:
        assert image.mode == "I;16"
    expected = {tuple(np.rint(a.astype(np.float64) / 257.0).astype(int).ravel()) for a in arrays}
    assert _values_seen(aepipe_pm, root) == expected
    assert sorted(next(iter(e for e in expected if e[:3] == (0, 100, 255)))[:3]) == [0, 100, 255]
    with Image.open(root / "0.png") as image:  # colour: the same grey in every channel
        rgb = to_chw(image, 3, None, "0.png")
    assert rgb.shape == (3, 6, 5) and (rgb == rgb[:1]).all() and rgb[0, 0, 2] == 255 and rgb[0, 0, 1] == 100
    big_endian = Image.frombytes("I;16B", (5, 6), arrays[1].astype(">u2").tobytes())
    assert (to_chw(big_endian, 1, None, "x")[0] == np.rint(arrays[1] / 257.0)).all()


@pytest.mark.parametrize("dtype, mode", [(np.int32, "I"), (np.float32, "F")])
def test_32_bit_integer_and_float_tiffs_are_scaled_from_their_own_range(aepipe_pm, tmp_path, dtype, mode):
    from PIL import Image

    rng = np.random.default_rng(1)
    arrays = [(rng.normal(size=(6, 5)) * 1e5 + 3e4).astype(dtype) for _ in range(4)]
    arrays[3][:] = 5  # a constant image: 0
    root = _folder(tmp_path, arrays, ".tiff")
    with Image.open(root / "0.tiff") as image:
        assert image.mode == mode
    expected = set()
    for a in arrays:
        a = a.astype(np.float64)
        lo, hi = a.min(), a.max()
        scaled = np.zeros_like(a) if hi == lo else np.rint((a - lo) * 255.0 / (hi - lo))
        expected.add(tuple(scaled.astype(int).ravel()))
    seen = _values_seen(aepipe_pm, root)
    assert seen == expected
    assert all(min(s) == 0 and max(s) == 255 for s in seen if len(set(s)) > 1) and (0,) * 30 in seen


def test_a_float_image_with_nan_and_a_mode_that_cannot_be_converted_are_refused_by_name(tmp_path):
    from PIL import Image

    bad = np.ones((3, 3), dtype=np.float32)
    bad[1, 1] = np.nan
    with pytest.raises(
        DataError, match=r"^bad\.tiff: a float image \(Pillow mode 'F'\) holding NaN or infinite values$"
    ):
        to_chw(Image.fromarray(bad), 1, None, "bad.tiff")

    class Odd(Image.Image):  # a mode Pillow reads but cannot convert (as Pillow says it)
        def __init__(self):
            super().__init__()
            self._mode, self._size = "XYZ", (2, 2)

        def convert(self, mode=None, *args, **kwargs):
            raise ValueError(f"conversion from XYZ to {mode} not supported")

    with pytest.raises(
        DataError, match=r"^odd\.png: an image of Pillow mode 'XYZ', which aepipe does not convert to L"
    ):
        to_chw(Odd(), 1, None, "odd.png")
    for mode, colour in (("LAB", (255, 128, 128)), ("La", (100, 128)), ("HSV", (0, 255, 255)), ("CMYK", (0, 0, 0, 0))):
        grey = to_chw(Image.new(mode, (2, 2), colour), 1, None, mode)  # converted through RGB or LA where Pillow must
        assert grey.shape == (1, 2, 2) and grey.dtype == np.uint8
    # un-premultiplied: 100 / (128/255)
    assert to_chw(Image.new("La", (1, 1), (100, 128)), 1, None, "x")[0, 0, 0] == 199
    assert to_chw(Image.new("LAB", (1, 1), (255, 128, 128)), 3, None, "x")[:, 0, 0].min() >= 250  # white stays white


def test_an_empty_class_folder_keeps_every_label_and_is_named(aepipe_pm, tmp_path):
    """Before: 'b' was dropped without a word and 'c' became label 1."""
    from PIL import Image

    root = tmp_path / "classes"
    for name, value in (("a", 30), ("c", 220)):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(root / name / f"{i}.png")
    (root / "b").mkdir()
    (root / "b" / "notes.txt").write_text("no images here")
    (root / ".cache").mkdir()  # hidden: not a class
    with pytest.warns(
        ImageDataWarning,
        match=r"^dataset 'imagefolder': class folder 'b' \(label 1\) in .*classes holds no images; "
        r"kept as a class, so that every class keeps its label",
    ):
        data = _load(aepipe_pm, name="imagefolder", path=str(root), channels=1)
    assert data.n_classes == 3
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    y = torch.cat([data.y_train, data.y_val, data.y_test])
    assert sorted(set(y.tolist())) == [0, 2]
    assert torch.allclose(x[y == 2], torch.tensor(220 / 255.0)) and torch.allclose(x[y == 0], torch.tensor(30 / 255.0))


def test_the_warning_is_one_line_on_the_command_line(monkeypatch, capsys):
    import warnings

    from aepipe.console import one_line_warnings

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    one_line_warnings()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("dataset 'imagefolder': class folder 'b' (label 1) in x holds no images", ImageDataWarning)
    assert (
        capsys.readouterr().err == "Warning: dataset 'imagefolder': class folder 'b' (label 1) in x holds no images\n"
    )


SECRETS = "DATABASE_PASSWORD=hunter2hunter2\nAPI_TOKEN=tok-9f8e7d6c5b4a\nAWS_SECRET=AKIAxyzxyzxyz\n"


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_a_file_of_secrets_given_as_data_is_not_echoed(aepipe_pm, tmp_path, suffix):
    """A .env file given as data: the error names the file and the place, with a short, masked
    excerpt; no secret, nor any 4 characters of one."""
    path = tmp_path / f"env{suffix}"
    path.write_text(SECRETS)
    with pytest.raises(DataError) as exc:
        _load(aepipe_pm, name="file", path=str(path))
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for secret in ("hunter2hunter2", "tok-9f8e7d6c5b4a", "AKIAxyzxyzxyz"):
        assert not any(secret[i:i + 4] in message for i in range(len(secret) - 3)), message
    if suffix == ".csv":
        assert "could not convert text 'DATABASE_PASSWOR'... to float64 at row 0, column 1" in message, message
    else:
        assert "not a .npy file (it starts with b'DATABA', not numpy's header)" in message, message
        (tmp_path / "pw.npy").write_text("PW=hunter2\n")
        with pytest.raises(
            DataError, match=r"not a \.npy file \(it starts with b'PW=\*\*\*', not numpy's header\)"
        ) as exc:
            _load(aepipe_pm, name="file", path=str(tmp_path / "pw.npy"))
        assert "hun" not in str(exc.value)
    (tmp_path / "cell.csv").write_text("1,2\n3,API_KEY=tok-9f8e7d6c5b4a\n")
    with pytest.raises(
        DataError, match=r"could not convert text 'API_KEY=\*\*\*' to float64 at row 1, column 2"
    ) as exc:
        _load(aepipe_pm, name="file", path=str(tmp_path / "cell.csv"))
    assert "9f8e" not in str(exc.value)


def test_an_excerpt_is_short_and_masked():
    assert excerpt("KEY=secret") == "'KEY=***'"
    assert excerpt("key: s3cr3t value") == "'key: ***'"
    assert excerpt("see postgresql://bob:hunter22@db/x") == "'see postgresql:*'..."
    assert excerpt("postgresql://bob:hunter22@db/x", width=40) == "'postgresql:***'"
    assert excerpt("pixel_0_0") == "'pixel_0_0'" and excerpt("x" * 100) == "'" + "x" * 16 + "'..."
    assert (
        excerpt(b"KEY=se") == "b'KEY=***'" and excerpt(b"1,2,3\n") == "b'1,2,3\\n'" and excerpt("a\x00b") == "'a\\x00b'"
    )
