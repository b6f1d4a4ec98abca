"""The disentanglement metrics (MIG, DCI, SAP, FactorVAE score): codes that copy the factors
score high, random codes low, each metric against a direct computation of its convention, and
a VAE trained on ``shapes`` gets all six in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aepipe.evaluation.disentanglement import (
    dci, dci_scores, disentanglement_metrics, factorvae_score, histogram_discretize, mig, sap,
)

KEYS = {"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "factorvae_score"}


def _factors(n: int = 3000, sizes=(3, 6, 8, 10), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, k, n) for k in sizes])


def _perfect(factors: np.ndarray, extra: int = 3, seed: int = 1) -> np.ndarray:
    """Each factor copied into one code (shuffled order, own scale), plus collapsed codes."""
    rng = np.random.default_rng(seed)
    codes = np.column_stack(
        [factors * rng.uniform(0.5, 3.0, factors.shape[1]), 1e-3 * rng.normal(size=(len(factors), extra))]
    )
    return codes[:, rng.permutation(codes.shape[1])]


def _random(factors: np.ndarray, z: int = 7, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(factors), z))


def _halves(codes, factors):
    cut = len(codes) * 2 // 3
    return (codes[:cut], factors[:cut]), (codes[cut:], factors[cut:])


# --- MIG ----------------------------------------------------------------------------------

def test_mig_of_the_factors_themselves_is_near_one_and_of_random_codes_near_zero():
    f = _factors()
    assert mig(_perfect(f), f) > 0.95
    assert mig(_random(f), f) < 0.03


def test_mig_is_a_gap_normalised_by_the_factor_entropy():
    from sklearn.metrics import mutual_info_score

    f = _factors(sizes=(4, 5))
    # factor 0 copied twice (no gap), factor 1 once, with noise that halves what the code knows
    rng = np.random.default_rng(3)
    noisy = np.where(rng.random(len(f)) < 0.5, f[:, 1], rng.integers(0, 5, len(f)))
    codes = np.column_stack([f[:, 0], f[:, 0] * 2.0, noisy]).astype(float)
    direct = []
    binned = histogram_discretize(codes)
    for j in range(2):
        mi = sorted((mutual_info_score(f[:, j], binned[:, i]) for i in range(3)), reverse=True)
        direct.append((mi[0] - mi[1]) / mutual_info_score(f[:, j], f[:, j]))
    assert direct[0] == pytest.approx(0.0, abs=1e-9) and 0.2 < direct[1] < 0.8
    assert mig(codes, f) == pytest.approx(np.mean(direct), rel=1e-12)


def test_histogram_discretisation_uses_twenty_equal_width_bins():
    c = np.linspace(-1.0, 3.0, 1001)[:, None]
    binned = histogram_discretize(c)[:, 0]
    assert binned.min() == 1 and binned.max() == 20
    counts = np.bincount(binned)[1:]
    assert counts.max() - counts.min() <= 2  # equal widths over the range


def test_constant_factors_are_left_out_and_bad_input_is_named():
    f = _factors(sizes=(5, 1, 6))
    codes = _perfect(f[:, [0, 2]])
    assert mig(codes, f) > 0.95  # the constant factor (entropy 0) would make it NaN
    with pytest.raises(ValueError, match="same N"):
        mig(codes[:10], f)
    with pytest.raises(ValueError, match="integer"):
        mig(codes, f.astype(float))
    with pytest.raises(ValueError, match="NaN"):
        mig(np.full_like(codes, np.nan), f)


# --- DCI ----------------------------------------------------------------------------------

def test_dci_of_an_importance_matrix_follows_eastwood_and_williams():
    assert dci_scores(np.eye(4)) == pytest.approx((1.0, 1.0), abs=1e-6)
    assert dci_scores(np.ones((4, 4))) == pytest.approx((0.0, 0.0), abs=1e-6)
    one_code_for_all = np.zeros((3, 3))
    one_code_for_all[0] = 1.0  # one code explains every factor: complete, not disentangled
    d, c = dci_scores(one_code_for_all)
    assert d == pytest.approx(0.0, abs=1e-6) and c == pytest.approx(1.0, abs=1e-6)
    # a direct computation on an arbitrary matrix
    r = np.random.default_rng(0).random((5, 3))
    p_code = r / r.sum(1, keepdims=True)
    p_factor = r / r.sum(0, keepdims=True)
    d_direct = np.sum((1 + (p_code * np.log(p_code)).sum(1) / np.log(3)) * r.sum(1) / r.sum())
    c_direct = np.sum((1 + (p_factor * np.log(p_factor)).sum(0) / np.log(5)) * r.sum(0) / r.sum())
    assert dci_scores(r) == pytest.approx((d_direct, c_direct), rel=1e-6)


def test_dci_of_perfect_codes_is_high_and_of_random_codes_low():
    # two factors and 300 fitting points: the boosted trees cost about 10 ms each, one per class per round
    f = _factors(900, sizes=(3, 6))
    good = dci(*_halves(_perfect(f), f)[0], test=_halves(_perfect(f), f)[1], max_train=300)
    assert min(good.values()) > 0.95, good
    bad = dci(_random(f), f, max_train=300)
    assert bad["disentanglement"] < 0.1 and bad["completeness"] < 0.1, bad
    chance = np.mean([1 / 3, 1 / 6])
    assert bad["informativeness"] < chance + 0.08, bad


# --- SAP ----------------------------------------------------------------------------------

def test_sap_of_perfect_codes_is_high_and_of_random_codes_low():
    f = _factors()
    fit, held = _halves(_perfect(f), f)
    linear = sap(*fit, test=held)
    threshold = sap(*fit, test=held, classifier="threshold")
    assert linear > 0.25  # one-vs-rest lines on one number: only the extreme values separate
    assert threshold > 0.8
    for how in ("linear", "threshold"):
        assert abs(sap(_random(f), f, classifier=how)) < 0.05
    with pytest.raises(ValueError, match="classifier"):
        sap(*fit, classifier="forest")


def test_sap_is_the_mean_gap_between_the_two_most_predictive_codes():
    from sklearn.svm import LinearSVC

    f = _factors(n=1500, sizes=(2, 3))
    rng = np.random.default_rng(5)
    codes = np.column_stack(
        [f[:, 0] + 0.3 * rng.normal(size=len(f)), f[:, 1] + 0.6 * rng.normal(size=len(f)), rng.normal(size=len(f))]
    )
    (x, y), (xt, yt) = _halves(codes, f)

    def accuracy(i: int, j: int) -> float:
        svc = LinearSVC(C=0.01, class_weight="balanced", random_state=0).fit(x[:, [i]], y[:, j])
        return float(np.mean(svc.predict(xt[:, [i]]) == yt[:, j]))

    acc = np.array([[accuracy(i, j) for j in range(2)] for i in range(3)])
    top = np.sort(acc, axis=0)
    assert sap(x, y, test=(xt, yt)) == pytest.approx(np.mean(top[-1] - top[-2]), abs=1e-12)


# --- FactorVAE score ------------------------------------------------------------------------

def test_factorvae_score_of_perfect_codes_is_one_and_of_random_codes_near_chance():
    f = _factors()
    fit, held = _halves(_perfect(f), f)
    assert factorvae_score(*fit, test=held) == pytest.approx(1.0)
    assert factorvae_score(_random(f), f) < 0.4  # chance is 1/4 for four factors


def test_factorvae_score_normalises_and_prunes_code_dimensions():
    f = _factors()
    codes = _perfect(f)
    rescaled = codes * np.random.default_rng(4).uniform(0.1, 100.0, codes.shape[1])
    # a code of large variance that ignores the factors: normalised away, never the argmin
    wide = np.column_stack([codes, 50.0 * np.random.default_rng(6).normal(size=len(f))])
    for c in (rescaled, wide):
        assert factorvae_score(c, f) == pytest.approx(1.0)
    # a code of small variance read unnormalised would win the votes of the other factor
    two = _factors(sizes=(10, 10))
    noise = np.random.default_rng(8).normal(size=(len(two), 2))
    uneven = np.column_stack([0.1 * (two[:, 0] + 0.3 * noise[:, 0]), 10.0 * two[:, 1] + noise[:, 1]])
    assert factorvae_score(uneven, two) > 0.95
    # every dimension collapsed (std below 0.05): no active dimension, score 0
    assert (
        factorvae_score(np.full((len(f), 3), 0.5) + 1e-4 * np.random.default_rng(7).normal(size=(len(f), 3)), f) == 0.0
    )
    # two factors entangled into two codes: the majority vote fails on some of their votes
    assert factorvae_score(np.column_stack([f[:, 0] + f[:, 1], f[:, 0] - f[:, 1], f[:, 2:]]).astype(float), f) < 0.9


def test_the_scores_are_repeatable_for_a_seed():
    f = _factors(n=1200)
    codes = _perfect(f) + 0.5 * _random(f, z=_perfect(f).shape[1])
    for fn in (sap, factorvae_score):
        assert fn(codes, f, seed=3) == fn(codes, f, seed=3)
    assert dci(codes, f, seed=3, max_train=100) == dci(codes, f, seed=3, max_train=100)  # boosted trees: ~10 ms each


# --- a model trained on shapes ------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_on_shapes(shared_store):
    """pipelines/vae-shapes.toml at a tiny budget (1,000 images, one epoch)."""
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import train

    from conftest import PIPELINES, store_at

    pm = get_plugin_manager()
    quiet = ["tracking.log_model=false", "tracking.log_images=false", "tracking.log_dataset=false"]
    with store_at(shared_store):
        pipeline = resolve(pm, PIPELINES / "vae-shapes.toml",
                           [*quiet, "data.examples=1000", "train.epochs=1", "evaluate.metrics=[]",
                                                              "model.regularizers.kl.iw_samples=2"])
        return train(pipeline, pm)


def test_a_vae_on_shapes_gets_every_disentanglement_metric_in_the_unit_interval(trained_on_shapes):
    r = trained_on_shapes
    assert r.data.factor_names == ("shape", "scale", "rotation", "x", "y")
    before = r.model.training
    scores = disentanglement_metrics(r.model, r.data, torch.device("cpu"), seed=0, dci_train=100)
    assert set(scores) == KEYS
    assert all(np.isfinite(v) and -1e-9 <= v <= 1 + 1e-9 for v in scores.values()), scores
    assert r.model.training == before
    assert disentanglement_metrics(r.model, r.data, torch.device("cpu"), seed=0, dci_train=100) == scores  # seeded
    # the same codes through the public pieces: MIG on every test row (fewer than MAX_TEST)
    from aepipe.evaluation.disentanglement import MAX_TEST, codes_of

    assert len(r.data.test) <= MAX_TEST
    codes = codes_of(r.model, r.data.test, np.arange(len(r.data.test)))
    assert mig(codes, r.data.test.factors) == pytest.approx(scores["mig"])


def test_data_without_factors_has_no_disentanglement_metrics(aepipe_pm):
    from aepipe.config import resolve
    from aepipe.model import build_model
    from aepipe.training import load_data

    pipeline = resolve(aepipe_pm, overrides=["model.code_dim=3"], tree={"variant": "vae", "data": {"name": "digits"}})
    data = load_data(pipeline, torch.device("cpu"))
    assert disentanglement_metrics(build_model(pipeline, data), data, torch.device("cpu")) == {}
