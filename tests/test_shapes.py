"""The ``shapes`` dataset: deterministic for a seed, its factors match its images (each factor
moves, scales, rotates or changes the shape as stated), and every split carries its rows'
factors through ``prepare``, held or streamed; datasets without factors are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aepipe.components import RawData
from aepipe.data import Feed, prepare
from aepipe.errors import DataError
from aepipe_plugins.datasets.shapes import Shapes, ShapesConfig

CPU = torch.device("cpu")


def _shapes(**settings) -> Shapes:
    return Shapes(ShapesConfig(**settings))


def _moments(image: np.ndarray) -> tuple[float, float, float, float]:
    """Area (in pixels), centroid column and row (pixel centres at i + 0.5), and the angle in
    degrees of the principal axis, anticlockwise on screen, of a ``(H, W)`` image."""
    w = image.astype(np.float64) / 255.0
    rows, cols = np.indices(w.shape) + 0.5
    area = w.sum()
    cx, cy = (w * cols).sum() / area, (w * rows).sum() / area
    dx, dy = cols - cx, -(rows - cy)  # y up
    mxx, myy, mxy = (w * dx * dx).sum(), (w * dy * dy).sum(), (w * dx * dy).sum()
    return area, cx, cy, float(np.degrees(0.5 * np.arctan2(2 * mxy, mxx - myy)))


def _render(ds: Shapes, **factors) -> np.ndarray:
    row = {"shape": 0, "scale": 0, "rotation": 0, "x": 0, "y": 0, "colour": 0}
    row.update(factors)
    return ds.render(np.array([[row[n] for n in ds.factor_names]]))[0]


def test_the_same_seed_gives_the_same_images_and_factors():
    a, b = _shapes(examples=300).load(), _shapes(examples=300).load()
    assert np.array_equal(a.x, b.x) and np.array_equal(a.factors, b.factors) and np.array_equal(a.y, b.y)
    c = _shapes(examples=300, seed=1).load()
    assert not np.array_equal(a.factors, c.factors) and not np.array_equal(a.x, c.x)


def test_what_load_returns():
    raw = _shapes(examples=400).load()
    assert raw.x.shape == (400, 1, 32, 32) and raw.x.dtype == np.uint8 and raw.value_range == (0.0, 255.0)
    assert raw.image_shape == (1, 32, 32) and raw.n_classes == 4
    assert raw.factor_names == ("shape", "scale", "rotation", "x", "y")
    assert np.array_equal(raw.y, raw.factors[:, 0])  # labels are the shape index
    sizes = [4, 6, 8, 10, 10]
    assert all(set(np.unique(raw.factors[:, j])) == set(range(k)) for j, k in enumerate(sizes))  # every value drawn
    assert raw.x.max() == 255 and raw.x.min() == 0 and ((raw.x > 0) & (raw.x < 255)).any()  # anti-aliased edges
    assert np.array_equal(raw.x, _shapes(examples=400).render(raw.factors))
    big = _shapes(
        examples=20, size=64, colour=True, colours=3, scales=3, rotations=5, positions=4, shapes=["heart", "square"]
    ).load()
    assert big.x.shape == (20, 3, 64, 64) and big.image_shape == (3, 64, 64) and big.n_classes == 2
    assert big.factor_names[-1] == "colour" and big.factors.max(axis=0).tolist() <= [1, 2, 4, 3, 3, 2]


def test_x_and_y_move_the_centroid_to_the_stated_pixel():
    ds = _shapes(size=64)
    centres = ds.factor_values()["x"]
    for shape in range(4):
        for i in (0, 4, 9):
            area, cx, cy, _ = _moments(_render(ds, shape=shape, scale=5, x=i, y=9 - i)[0])
            assert cx == pytest.approx(centres[i], abs=0.25) and cy == pytest.approx(centres[9 - i], abs=0.25)
    # changing x alone leaves the row, area and appearance (shifted) alone
    a, b = _render(ds, shape=2, x=2)[0], _render(ds, shape=2, x=5)[0]
    assert _moments(a)[2] == pytest.approx(_moments(b)[2], abs=0.01)
    assert _moments(a)[0] == pytest.approx(_moments(b)[0], rel=0.01)


def test_scale_grows_the_area_as_its_square_about_a_fixed_centroid():
    ds = _shapes(size=64)
    scales = ds.factor_values()["scale"]
    assert scales[0] == 0.5 and scales[-1] == 1.0
    for shape in range(4):
        areas = []
        for s in range(6):
            area, cx, cy, _ = _moments(_render(ds, shape=shape, scale=s, x=5, y=5)[0])
            areas.append(area)
            assert (cx, cy) == pytest.approx(tuple(ds.factor_values()["x"][[5, 5]]), abs=0.25)
        assert np.all(np.diff(areas) > 0)
        assert areas[-1] / areas[0] == pytest.approx((scales[-1] / scales[0]) ** 2, rel=0.06)


def test_rotation_turns_the_shape_by_the_stated_angle():
    ds = _shapes(size=64, rotations=6, max_rotation=90.0)
    angles = ds.factor_values()["rotation"]
    assert angles.tolist() == pytest.approx([0, 15, 30, 45, 60, 75])
    # the ellipse's long axis (horizontal at 0) points at the stated angle, anticlockwise on screen
    for r, angle in enumerate(angles):
        area, cx, cy, axis = _moments(_render(ds, shape=1, scale=5, rotation=r, x=5, y=5)[0])
        assert axis == pytest.approx(angle, abs=2.0)
    # every shape keeps its area and centroid and changes its pixels when turned
    for shape in range(4):
        base = _render(ds, shape=shape, scale=5, x=5, y=5)[0]
        turned = _render(ds, shape=shape, scale=5, rotation=2, x=5, y=5)[0]
        assert np.abs(base.astype(int) - turned).sum() > 0.1 * base.sum()
        assert _moments(turned)[0] == pytest.approx(_moments(base)[0], rel=0.03)
        assert _moments(turned)[1:3] == pytest.approx(_moments(base)[1:3], abs=0.25)


def test_shape_changes_the_outline_and_colour_the_colour():
    ds = _shapes(size=64, colour=True)
    grey = [(_render(ds, shape=s, scale=5, x=5, y=5).max(axis=0)) for s in range(4)]
    # areas of unit-radius outlines: square 2, ellipse pi/2, heart, triangle 3 sqrt(3) / 4
    areas = np.array([_moments(g)[0] for g in grey])
    assert areas[0] / areas[3] == pytest.approx(2 / (3 * np.sqrt(3) / 4), rel=0.04)
    assert areas[0] / areas[1] == pytest.approx(2 / (np.pi / 2), rel=0.04)
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(grey[i].astype(int) - grey[j]).sum() > 0.2 * grey[i].sum()
    palette = ds.factor_values()["colour"]
    for c in range(4):
        image = _render(ds, shape=0, scale=5, x=5, y=5, colour=c)
        inside = image.max(axis=0) == image.max()
        assert image[:, inside].mean(axis=1) == pytest.approx(palette[c], abs=1)


@pytest.mark.parametrize("in_memory", [True, False])
def test_every_split_carries_its_rows_factors(in_memory):
    ds = _shapes(examples=500)
    raw = ds.load()
    data = prepare(raw, "shapes", 0.1, 0.2, 3, CPU, in_memory=in_memory, feed=Feed())
    assert data.factor_names == raw.factor_names and data.streamed is (not in_memory)
    seen = []
    for split in (data.train, data.val, data.test):
        f = split.factors
        assert f.dtype == np.int64 and f.shape == (len(split), 5)
        assert torch.equal(split.y, torch.as_tensor(f[:, 0]))  # aligned with the labels
        x = torch.cat([xb for xb, _ in split.batches(64)])  # aligned with the rows, in order
        assert torch.allclose(x, torch.as_tensor(ds.render(f).reshape(len(f), -1) / 255.0, dtype=torch.float32))
        positions = torch.tensor([len(split) - 1, 0, 3])
        xb, _ = split.take(positions)
        assert torch.allclose(
            xb, torch.as_tensor(ds.render(f[positions.numpy()]).reshape(3, -1) / 255.0, dtype=torch.float32)
        )
        seen.append(f)
    assert sum(len(f) for f in seen) == 500


def test_a_dataset_with_its_own_test_split_gives_its_test_factors():
    ds = _shapes(examples=200)
    raw, test = ds.load(), _shapes(examples=50, seed=9).load()
    raw.x_test, raw.y_test, raw.factors_test = test.x, test.y, test.factors
    data = prepare(raw, "shapes", 0.1, 0.2, 0, CPU)
    assert np.array_equal(data.test.factors, test.factors)
    assert len(data.train) + len(data.val) == 200
    raw.factors_test = None
    with pytest.raises(DataError, match="not for its test split"):
        prepare(raw, "shapes", 0.1, 0.2, 0, CPU)


def test_bad_factors_are_one_line_errors():
    x = np.zeros((20, 4), dtype=np.uint8)
    for factors, names, match in [(np.zeros((19, 2), int), (), r"shape \(19, 2\) for 20 rows"),
                                  (np.full((20, 2), 0.5), (), "non-negative integer"),
                                  (-np.ones((20, 2), int), (), "non-negative integer"),
                                  (np.zeros((20, 2), int), ("a",), "1 factor_names for 2")]:
        with pytest.raises(DataError, match=f"dataset 'd': .*{match}"):
            prepare(RawData(x, None, (0.0, 255.0), factors=factors, factor_names=names), "d", 0.1, 0.2, 0, CPU)
    with pytest.raises(DataError, match="factors_test given without factors"):
        prepare(RawData(x, None, (0.0, 255.0), factors_test=np.zeros((5, 1), int)), "d", 0.1, 0.2, 0, CPU)
    named = prepare(RawData(x, None, (0.0, 255.0), factors=np.zeros((20, 2), int)), "d", 0.1, 0.2, 0, CPU)
    assert named.factor_names == ("factor0", "factor1")


def test_datasets_without_factors_are_unchanged():
    from aepipe_plugins.datasets.sources import Digits

    data = prepare(Digits(Digits.Config()).load(), "digits", 0.1, 0.2, 0, CPU)
    assert data.factor_names == () and data.train.factors is None and data.test.factors is None
