"""The judge's ladder (issue 31): sets whose answer is known, scored in the default feature space.

Every rung's target, on every shipped labelled dataset (digits, mnist5k, shapes) and the colour
set (shapes with ``colour = true``): FID and KID grow with each degradation's strength and stay
above real-against-real; precision and density fall for sets off the data (the mean image, strong
noise: precision at most 0.3); recall and coverage fall under mode collapse (one mode, a few
images repeated: at most 0.3); shuffled pixels are far from everything. A target the default
space misses is in :data:`MISSED` with its measured figure (docs/judge.md says so too): its test
asserts that figure's bound, so it cannot get worse unseen, and fails when it is met (then move
it out). Features computed once per dataset (the session's shared feature cache)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from aepipe import cli as cli_module
from aepipe.evaluation import DEFAULT_FEATURES
from aepipe.evaluation.generation import feature_space
from aepipe.evaluation.image_sets import load_dataset
from aepipe.evaluation.ladder import RUNGS, build_ladder, ladder_table, one_mode, score_ladder

from conftest import store_at

#: the datasets of the report card (docs/judge.md, benchmarks/judge.py: the same tables)
DATASETS = {
    "digits": {"name": "digits"},
    "mnist5k": {"name": "mnist5k"},
    "shapes": {"name": "shapes", "examples": 5000},
    "shapes-colour": {"name": "shapes", "examples": 5000, "colour": True},
}
N = {"digits": 300, "mnist5k": 500, "shapes": 500, "shapes-colour": 500}  # digits: 269, half its held-out images
#: the issue's bound of 0.3 where the default space misses it: {(dataset, rung, metric): the bound the
#: measured figure keeps (measured value in the comment)}
MISSED: dict[tuple[str, str, str], float] = {
    ("digits", "noise-2", "precision"): 0.4,  # 0.38; 0.34 +- 0.06 over 5 draws; probes = 4: 0.25 (docs/judge.md)
    ("shapes", "one-class", "coverage"): 0.47,  # 0.44 (recall 0.16 meets it); the true factors one-hot: 0.38
    ("shapes-colour", "one-class", "recall"): 0.46,  # 0.43
    ("shapes-colour", "one-class", "coverage"): 0.52,  # 0.49
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("ladder") / "mlruns"


@pytest.fixture(scope="module")
def data(one_torch_thread):
    """Each dataset, loaded once when a test first asks for it."""
    out: dict[str, object] = {}

    def get(name: str):
        if name not in out:
            out[name] = load_dataset(DATASETS[name], "cpu")
        return out[name]

    return get


@pytest.fixture(scope="module")
def scores(home, data):
    """Each dataset's ladder, scored once in the default space when a test first asks for it."""
    out: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in out:
            with store_at(home):
                d = data(name)
                out[name] = score_ladder(build_ladder(d, N[name]), feature_space(DEFAULT_FEATURES, d, "cpu"))
        return out[name]

    return get


def _at_most(s: dict, name: str, rung: str, metric: str, bound: float = 0.3) -> None:
    value = s[rung][metric]
    missed = MISSED.get((name, rung, metric))
    if missed is None:
        assert value <= bound, (name, rung, metric, s[rung])
    else:  # a known miss: no worse than measured, and not met (else it belongs out of MISSED)
        assert bound < value <= missed, (name, rung, metric, s[rung], "known miss")


def test_the_rungs_are_what_they_say(data):
    d = data("digits")
    ladder = build_ladder(d, 500)
    n = ladder.n
    held_out = len(d.val) + len(d.test)
    assert n == held_out // 2 and tuple(ladder.rungs) == RUNGS
    assert all(
        x.shape == (n, d.input_dim) and 0 <= float(x.min()) and float(x.max()) <= 1 for x in ladder.rungs.values()
    )
    real, ref = ladder.rungs["real"], ladder.reference
    assert not (torch.cdist(real, ref) < 1e-6).any()  # disjoint halves of the held-out images
    train = d.x_train
    assert (torch.cdist(ladder.rungs["train-copies"], train).min(1).values < 1e-6).all()
    assert not (torch.cdist(real, train).min(1).values < 1e-6).all()
    assert len(torch.unique(ladder.rungs["repeated"], dim=0)) == 10
    label = int(torch.bincount(d.y_train).argmax())
    nearest = torch.cdist(ladder.rungs["one-class"], train).argmin(1)
    assert (d.y_train[nearest] == label).all()  # digits have no factors: one class
    # shuffled: the same values in each image, other places
    assert torch.equal(ladder.rungs["shuffled"].sort(1).values, real.sort(1).values)
    assert not torch.equal(ladder.rungs["shuffled"], real)
    # blur keeps the brightness and lowers the contrast, more at 2 sigma
    diffs = [float((ladder.rungs[r] - real).abs().mean()) for r in ("blur-1", "blur-2")]
    assert 0 < diffs[0] < diffs[1]
    assert float((ladder.rungs["mean"] - train.mean(0)).abs().mean()) < 0.03
    assert build_ladder(d, 50).n == 50 and torch.equal(build_ladder(d, 50).reference, build_ladder(d, 50).reference)
    # shapes: one mode is one shape at one scale (a tenth of the data at most), the other factors free
    d = data("shapes")
    ladder = build_ladder(d, 100)
    train = d.x_train
    nearest = torch.cdist(ladder.rungs["one-class"], train, compute_mode="donot_use_mm_for_euclid_dist").min(1)
    assert (nearest.values < 1e-6).all()
    f = d.train.factors[nearest.indices.numpy()]
    assert len({tuple(r) for r in f[:, :2]}) == 1 and all(len(set(f[:, j])) > 1 for j in (2, 3, 4)), f[:5]
    mask, fixed = one_mode(d.y_train.numpy(), d.train.factors)
    assert fixed == [1] and mask.mean() <= 0.1


@pytest.mark.parametrize("name", list(DATASETS))
def test_fid_and_kid_grow_with_each_degradation(scores, name):
    s = scores(name)
    for metric in ("fid", "kid"):
        v = {rung: s[rung][metric] for rung in RUNGS}
        assert v["real"] < v["blur-1"] < v["blur-2"], (metric, v)
        assert v["real"] < v["noise-1"] < v["noise-2"], (metric, v)
        for rung in RUNGS:
            if rung not in ("real", "train-copies"):
                assert v[rung] > max(v["real"], 0.0), (metric, rung, v)


@pytest.mark.parametrize("name", list(DATASETS))
def test_precision_and_density_fall_off_the_data_recall_and_coverage_under_mode_collapse(scores, name):
    s = scores(name)
    assert s["real"]["precision"] > 0.85 and s["real"]["recall"] > 0.85 and s["real"]["coverage"] > 0.85
    assert s["train-copies"]["precision"] > 0.85 and s["train-copies"]["coverage"] > 0.85  # FID cannot see memorization
    for rung in ("mean", "noise-2"):  # off the data
        _at_most(s, name, rung, "precision")
        assert s[rung]["density"] <= 0.3 * s["real"]["density"], (rung, s[rung])
    for rung in ("one-class", "repeated"):  # mode collapse
        for metric in ("recall", "coverage"):
            _at_most(s, name, rung, metric)
    assert s["shuffled"]["precision"] <= 0.1 and s["shuffled"]["coverage"] <= 0.1


def test_one_mode_is_one_class_then_one_value_of_further_factors():
    import numpy as np

    labels = np.array([0, 0, 0, 1] * 25)  # class 0 holds 75%
    mask, fixed = one_mode(labels, None)
    assert mask.sum() == 75 and fixed == []  # no factors: the class alone
    rng = np.random.default_rng(0)
    factors = np.column_stack([labels, rng.integers(0, 2, 100), rng.integers(0, 20, 100)])
    mask, fixed = one_mode(labels, factors)
    kept = factors[mask]
    assert fixed[0] == 1 and (kept[:, 0] == 0).all() and len(np.unique(kept[:, 1])) == 1  # the label column is skipped
    assert mask.mean() <= 0.1 and (fixed == [1] or fixed == [1, 2])
    assert one_mode(labels, factors, share=1.0)[1] == []  # the class is already small enough


def test_calibrate_prints_the_ladder_table(home, monkeypatch):
    from conftest import use_store

    use_store(monkeypatch, home)
    runner = CliRunner()
    out = runner.invoke(cli_module.cli, ["calibrate", "digits", "--n", "60", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["features"] == DEFAULT_FEATURES and result["n"] == 60 and result["dataset"] == "digits"
    assert list(result["rungs"]) == list(RUNGS) and set(result["rungs"]["mean"]) == {
        "fid", "kid", "precision", "recall", "density", "coverage"}
    text = runner.invoke(cli_module.cli, ["calibrate", "digits", "--n", "60", "--format", "markdown"])
    assert text.exit_code == 0 and "| rung | fid | kid |" in text.output and "| blur-2 |" in text.output
    assert ladder_table(result["rungs"]).splitlines()[0].split() == ["rung", "fid", "kid", "precision", "recall",
                                                                     "density",
                                                                     "coverage"]
    # over seeds: each figure the mean of the ladders drawn at seeds 0, 1, 2, with its 95% t-interval
    import statistics

    over = runner.invoke(cli_module.cli, ["calibrate", "digits", "--n", "60", "--seeds", "3", "--json"])
    over = json.loads(over.output)
    alone = [result] + [json.loads(runner.invoke(cli_module.cli, ["calibrate", "digits", "--n", "60", "--seed", str(s),
                                                                  "--json"]).output) for s in (1, 2)]
    assert over["seeds"] == [0, 1, 2]
    fids = [a["rungs"]["noise-2"]["fid"] for a in alone]
    assert len(set(fids)) == 3 and over["rungs"]["noise-2"]["fid"] == pytest.approx(statistics.fmean(fids), rel=1e-9)
    lo, hi = over["intervals"]["noise-2"]["fid"]
    assert hi - lo == pytest.approx(2 * 4.3027 * statistics.stdev(fids) / 3 ** 0.5, rel=1e-4)  # t(0.975, 2) from tables
    table = ladder_table(over["rungs"], "markdown", over["intervals"])
    assert f"| noise-2 | {statistics.fmean(fids):.4g} ± {(hi - lo) / 2:.2g} |" in table
    bad = runner.invoke(cli_module.cli, ["calibrate", "digits", "--space", "nope"])
    assert bad.exit_code == 2 and "unknown feature 'nope'" in bad.output and "Traceback" not in bad.output
