"""Bootstrap intervals of the generation metrics (issue 31, item 5): each holds its estimate, is
repeatable for a seed, narrows as the sets grow, and covers the spread of the metric over fresh
draws; and the logged names pair each metric with its bounds."""

from __future__ import annotations

import numpy as np
import pytest

from aepipe.evaluation import bound_of, bounds, key, metric_of, order
from aepipe.evaluation.generation import generation_metrics, generation_metrics_with_intervals

NAMES = ("fid", "kid", "precision", "recall", "density", "coverage", "authenticity", "data_copying")


def _sets(n: int, seed: int, width: int = 8):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, width))
    fake = rng.normal(size=(n, width)) * 1.2 + 0.3
    train = rng.normal(size=(2 * n, width))
    return real, fake, train


def test_each_interval_holds_its_estimate_and_is_repeatable():
    real, fake, train = _sets(300, 0)
    out = generation_metrics_with_intervals(real, fake, train=train, resamples=60, seed=3)
    assert set(out) == set(NAMES)
    point = generation_metrics(real, fake, train=train)
    for name, (v, lo, hi) in out.items():
        assert v == pytest.approx(point[name], rel=1e-12), name  # the estimate is generation_metrics'
        assert lo <= v <= hi and lo < hi, (name, lo, v, hi)
    assert out["precision"][1] >= 0 and out["recall"][2] <= 1 and out["fid"][1] >= 0  # clipped to the range
    assert generation_metrics_with_intervals(real, fake, train=train, resamples=60, seed=3) == out
    other = generation_metrics_with_intervals(real, fake, train=train, resamples=60, seed=4)
    assert other != out and all(other[n][0] == out[n][0] for n in NAMES)  # the seed moves the bounds only
    none = generation_metrics_with_intervals(real, fake, resamples=0)
    assert all(lo == v == hi for v, lo, hi in none.values())


def test_wide_features_get_no_fid_interval(monkeypatch):
    """FID's resamples cost F^3 each: wider than FID_BOOTSTRAP_WIDTH, FID has no interval (NaN)."""
    import math

    from aepipe.evaluation import generation

    monkeypatch.setattr(generation, "FID_BOOTSTRAP_WIDTH", 4)
    real, fake, _ = _sets(100, 2)
    out = generation_metrics_with_intervals(real, fake, resamples=10)
    assert math.isnan(out["fid"][1]) and math.isnan(out["fid"][2]) and out["fid"][0] > 0
    assert out["kid"][1] <= out["kid"][0] <= out["kid"][2] and not math.isnan(out["precision"][1])


def test_intervals_narrow_as_the_sets_grow():
    def intervals(n: int):
        real, fake, train = _sets(n, 1)
        return generation_metrics_with_intervals(real, fake, train=train, resamples=40)

    small, large = intervals(100), intervals(800)
    for name in NAMES:
        if name == "data_copying":  # a z score: its spread does not shrink with n (it is n-normalised)
            continue
        width = lambda out: out[name][2] - out[name][1]  # noqa: E731
        assert width(large) < 0.7 * width(small), (name, width(small), width(large))


def test_the_fid_interval_covers_fresh_draws_of_the_same_distributions():
    """Over fresh sets from the same distributions FID varies; a 95% interval computed on one
    draw holds most of the other draws' estimates (its job)."""
    real, fake, _ = _sets(400, 5)
    _, lo, hi = generation_metrics_with_intervals(real, fake, resamples=100)["fid"]
    fresh = [generation_metrics(*_sets(400, 100 + s)[:2])["fid"] for s in range(12)]
    inside = sum(lo <= f <= hi for f in fresh)
    assert inside >= 9, (lo, hi, fresh)


def test_interval_keys_pair_with_their_metric():
    assert key("fid", bound="lo") == "eval_fid_lo"
    assert key("precision", "inception", "gmm", "hi") == "eval_precision_inception_hi.gmm"
    assert bound_of("eval_precision_inception_hi.gmm") == ("eval_precision_inception.gmm", "hi")
    assert bound_of("eval_fid") == ("eval_fid", None) and bound_of("eval_mse") == ("eval_mse", None)
    assert bounds("eval_fid_inception.gmm") == ("eval_fid_inception_lo.gmm", "eval_fid_inception_hi.gmm")
    assert (
        metric_of("eval_authenticity_lo") == "authenticity" and metric_of("eval_data_copying_hi.gmm") == "data_copying"
    )
    assert order(["eval_fid_hi", "eval_kid", "eval_fid", "eval_fid_lo"]) == ["eval_fid", "eval_fid_lo", "eval_fid_hi",
                                                                             "eval_kid"]
    with pytest.raises(ValueError, match="choose lo or hi"):
        key("fid", bound="mid")
