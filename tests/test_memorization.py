"""Memorization (issue 31, item 3): a model that returns its training images scores a perfect FID,
so the generation group also says how novel its samples are. Copies of training images must be
flagged (authenticity near 0, the data-copying statistic C_T strongly negative), held-out real
images must not (authenticity at the real-data level, C_T near 0), and noised copies must sit in
between; on synthetic features and on the digits in the ``domain`` space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aepipe.errors import ConfigError
from aepipe.evaluation.generation import feature_space, generation_metrics
from aepipe.evaluation.image_sets import load_dataset
from aepipe.evaluation.memorization import authenticity_rows, copying_statistic

from conftest import store_at


def _ladder(train: np.ndarray, test: np.ndarray, held_out: np.ndarray, noise: float, seed: int = 0) -> dict[str, dict]:
    """The memorization metrics of copies, noised copies and held-out rows against ``train``."""
    rng = np.random.default_rng(seed)
    m = len(held_out)
    copies = train[rng.choice(len(train), m, replace=False)]
    noised = copies + noise * rng.normal(size=copies.shape)
    return {name: generation_metrics(test, fake, train=train)
            for name, fake in (("copies", copies), ("noised", noised), ("held_out", held_out))}


def test_copies_are_flagged_held_out_rows_are_not_and_noised_copies_sit_between():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16)) * 3
    draw = lambda n: centres[rng.integers(0, 10, n)] + rng.normal(size=(n, 16))  # noqa: E731
    train, test, held_out = draw(1500), draw(500), draw(500)
    out = _ladder(train, test, held_out, noise=0.7)
    a = {name: v["authenticity"] for name, v in out.items()}
    c = {name: v["data_copying"] for name, v in out.items()}
    assert a["copies"] == 0.0  # every copy lies on its training row
    assert 0.35 < a["held_out"] < 0.75, a  # the real-data level
    assert a["copies"] < a["noised"] < a["held_out"], a
    assert c["copies"] < -5 and abs(c["held_out"]) < 3, c  # -5: about 40 rows per cell
    assert c["copies"] < c["noised"] < c["held_out"], c
    # the other figures cannot tell a copier from a model that generalises
    assert out["copies"]["precision"] == pytest.approx(out["held_out"]["precision"], abs=0.05)
    # a model that generates off the data (far from every training row) is authentic and C_T > 0
    far = generation_metrics(test, held_out + 3.0, train=train)
    assert far["authenticity"] > 0.9 and far["data_copying"] > 3


def test_memorization_needs_the_training_set_and_checks_it():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    assert "authenticity" not in generation_metrics(real, fake)  # two sets (aepipe fid): no training set
    with pytest.raises(ConfigError, match=r"training features \(50, 3\)"):
        generation_metrics(real, fake, train=rng.normal(size=(50, 3)))
    bad = rng.normal(size=(50, 4))
    bad[0, 0] = np.inf
    with pytest.raises(ConfigError, match="training features hold NaN"):
        generation_metrics(real, fake, train=bad)


def test_authenticity_follows_alaa_et_al_on_a_line():
    train = np.array([[0.0], [1.0], [3.0], [3.0], [7.0]])  # nearest distinct neighbours: 1, 1, 2, 2, 4
    fake = np.array([[0.0], [0.5], [1.5], [2.5], [5.5], [9.0], [3.0]])
    # 0 copies train 0 (d 0 < 1); 0.5 is 0.5 from train 0 (radius 1); 1.5: 0.5 from 1 (radius 1);
    # 2.5: 0.5 from 3 (radius 2, its copy 3 not counted); 5.5: 1.5 from 7 (radius 4); 9: 2 from 7
    # (radius 4); 3 copies a repeated row
    assert authenticity_rows(train, fake).tolist() == [0, 0, 0, 0, 0, 0, 0]
    assert authenticity_rows(train, np.array([[-1.5], [12.0]])).tolist() == [1, 1]


def test_the_copying_statistic_is_a_z_scored_mann_whitney_test_per_cell():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(2)
    real_d, fake_d = rng.exponential(size=300), rng.exponential(size=200) * 0.8
    real_cell, fake_cell = rng.integers(0, 3, 300), rng.integers(0, 3, 200)
    expected, weight = 0.0, 0.0
    for c in range(3):  # scipy's U of the generated distances, z-scored as Meehan et al.'s code does
        q, p = fake_d[fake_cell == c], real_d[real_cell == c]
        u = mannwhitneyu(q, p).statistic
        z = (u - (len(q) * len(p) / 2 - 0.5)) / np.sqrt(len(q) * len(p) * (len(q) + len(p) + 1) / 12)
        expected += z * len(p) / 300
        weight += len(p) / 300
    assert copying_statistic(real_cell, real_d, fake_cell, fake_d, 3) == pytest.approx(expected / weight, rel=1e-12)
    # a cell holding no more than 20/M of the generated rows is left out (the paper's tau)
    few = fake_cell.copy()
    few[few == 2] = 0
    few[:20] = 2
    kept = copying_statistic(real_cell, real_d, few, fake_d, 3)
    only = copying_statistic(real_cell[real_cell < 2], real_d[real_cell < 2], few, fake_d, 2)
    assert kept == pytest.approx(only, rel=1e-12)


@pytest.fixture(scope="module")
def digits_space(tmp_path_factory):
    with store_at(tmp_path_factory.mktemp("memorization") / "mlruns"):
        data = load_dataset({"name": "digits"}, "cpu")
        space = feature_space("domain", data, "cpu")
    return data, space


def test_digit_copies_are_flagged_in_the_domain_space(digits_space):
    data, space = digits_space
    train = torch.cat([x for x, _ in data.train.batches(4096)])
    test = torch.cat([x for x, _ in data.test.batches(4096)])
    n = len(test) // 2
    g = torch.Generator().manual_seed(0)
    copies = train[torch.randperm(len(train), generator=g)[:n]]
    noised = (copies + 0.15 * torch.randn(copies.shape, generator=g)).clamp(0, 1)
    f_train, f_test = space.features(train), space.features(test[:n])
    out = {name: generation_metrics(f_test, space.features(x), train=f_train)
           for name, x in (("copies", copies), ("noised", noised), ("held_out", test[n:]))}
    a = {name: v["authenticity"] for name, v in out.items()}
    c = {name: v["data_copying"] for name, v in out.items()}
    assert a["copies"] < 0.05 and a["held_out"] > 0.3 and a["copies"] < a["noised"] < a["held_out"], a
    assert c["copies"] < -5 and abs(c["held_out"]) < 3 and c["copies"] < c["noised"], c
    # FID cannot tell: the copies score about as well as held-out digits
    assert out["copies"]["fid"] < 3 * out["held_out"]["fid"] + 1.0
