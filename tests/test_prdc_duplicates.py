"""Precision, recall, density and coverage with repeated rows (issue 30): identical sets score
precision and recall 1 however often their rows repeat, and on sets without repeats the figures
are the ``prdc`` package's (Naeem et al.'s reference code), which aepipe no longer calls."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from aepipe.errors import ConfigError
from aepipe.evaluation.generation import generation_metrics, prdc_rows
from aepipe.evaluation.neighbours import knn_radii


def _prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        return {key: float(v) for key, v in compute_prdc(real, fake, k).items()}


def test_identical_sets_with_repeated_rows_score_precision_and_recall_one():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(60, 8))
    repeated = np.repeat(rows, 7, axis=0)  # every row 7 times: more than k = 5 copies
    ours = generation_metrics(repeated, repeated.copy())
    assert ours["precision"] == 1.0 and ours["recall"] == 1.0 and ours["coverage"] == 1.0
    assert ours["fid"] == pytest.approx(0.0, abs=1e-6)
    # density counts every copy's ball that holds a sample: the 7 copies of its own row at least
    assert ours["density"] >= 7 / 5
    # what prdc gives on the same sets: the radii collapse to 0 and nothing is inside any ball
    theirs = _prdc(repeated, repeated.copy())
    assert theirs["precision"] == 0.0 and theirs["recall"] == 0.0
    # the same rows repeated differently in the two sets are still the same distribution
    other = np.concatenate([np.repeat(rows[:30], 3, axis=0), np.repeat(rows[30:], 11, axis=0)])
    mixed = generation_metrics(repeated, other)
    assert mixed["precision"] == 1.0 and mixed["recall"] == 1.0 and mixed["coverage"] == 1.0


def test_radii_count_copies_and_a_balls_edge_is_inside():
    rows = np.arange(10, dtype=np.float64)[:, None]  # 0, 1, ..., 9 on a line
    plain = knn_radii(rows, 2)
    assert plain[0] == 2.0 and plain[5] == 1.0  # the second nearest other row
    doubled = knn_radii(np.repeat(rows, 4, axis=0), 2)
    assert (doubled == 0).all()  # three copies nearer than any other row
    with pytest.raises(ConfigError, match="more than 5 rows"):
        generation_metrics(rows[:5], rows[:5])


def test_a_few_images_repeated_keep_a_low_recall():
    """Mode collapse onto 10 images, each repeated: their balls have radius 0, so real rows are
    not inside them (recall near 0; coverage only near those 10), while precision stays high."""
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 8))
    repeated = np.repeat(real[:10] + 0.01, 40, axis=0)
    ours = generation_metrics(real, repeated)
    assert ours["recall"] <= 0.05 and ours["coverage"] <= 0.2, ours  # the real rows near the 10 images: 0.11
    assert ours["precision"] >= 0.9, ours


@pytest.mark.parametrize("shift, scale", [(0.0, 1.0), (0.4, 1.0), (0.0, 0.6), (1.5, 2.0)])
def test_prdc_without_repeated_rows_is_the_prdc_packages(shift, scale):
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 12))
    fake = rng.normal(size=(300, 12)) * scale + shift
    rows = prdc_rows(real, fake, 5)
    ours = {name: float(v.mean()) for name, v in rows.items()}
    theirs = _prdc(real, fake, 5)
    for name in ("precision", "recall", "density", "coverage"):
        assert ours[name] == pytest.approx(theirs[name], abs=1e-12), name
    assert generation_metrics(real, fake)["recall"] == pytest.approx(theirs["recall"], abs=1e-12)
