"""The judge against peers on identical inputs (issue 31, item 7).

- FID and KID against torchmetrics' ``FrechetInceptionDistance`` and ``KernelInceptionDistance``,
  fed the same feature rows through a feature extractor that returns what it is given.
- MIG, DCI, SAP and the FactorVAE score against disentanglement_lib's documented conventions,
  re-derived here independently of aepipe's code (``disent``, the PyTorch port, was not used: it
  needs ``lightning`` and a ``torchvision`` built for the installed torch): mean codes; MIG from
  20 equal-width bins and a contingency-table mutual information; DCI from scikit-learn's default
  ``GradientBoostingClassifier``; SAP from ``LinearSVC(C=0.01, class_weight="balanced")`` on each
  single code; the FactorVAE score from 64-point batches drawn from the generative process, the
  majority-vote classifier and dimensions with a standard deviation under 0.05 pruned.

Tolerances: FID 1e-6 relative (float64 on both sides; torchmetrics takes the eigenvalues of
``S1 S2``, aepipe of the symmetric ``S1^(1/2) S2 S1^(1/2)``), KID 1e-9 relative, MIG and SAP
1e-9 absolute, DCI 1e-9 absolute (the same boosted trees, seeded alike, on the same points), the
FactorVAE score 0.03 (aepipe draws each batch from
the points given, disentanglement_lib from the generative process).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aepipe.evaluation import disentanglement as dis
from aepipe.evaluation.generation import frechet_distance, gaussian_stats, kernel_inception_distance


class _Given(torch.nn.Module):
    """A torchmetrics feature extractor that returns its input: the "images" are feature rows."""

    def __init__(self, width: int):
        super().__init__()
        self.num_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _features(seed: int, n: int, m: int, width: int):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(width, width)) / np.sqrt(width)
    real = rng.normal(size=(n, width)) @ mix
    fake = (rng.normal(size=(m, width)) * 1.1 + 0.2) @ mix
    return real, fake


@pytest.mark.parametrize("seed, n, m, width", [(0, 500, 400, 16), (2, 60, 80, 100)])
def test_fid_equals_torchmetrics_frechet_inception_distance(seed, n, m, width):
    from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid

    real, fake = _features(seed, n, m, width)
    metric = FrechetInceptionDistance(feature=_Given(width))
    for rows, is_real in ((real, True), (fake, False)):
        for part in np.array_split(rows, 3):  # streamed in batches, as torchmetrics accumulates
            metric.update(torch.from_numpy(part), real=is_real)
    theirs = float(metric.compute())
    ours = frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))
    assert ours == pytest.approx(theirs, rel=1e-6)
    # and the distance alone, on the same means and covariances
    stats = [torch.from_numpy(s) for s in (*gaussian_stats(real), *gaussian_stats(fake))]
    assert ours == pytest.approx(float(_compute_fid(*stats)), rel=1e-6)


@pytest.mark.parametrize("seed, n, width", [(4, 150, 64)])
def test_kid_equals_torchmetrics_kernel_inception_distance(seed, n, width):
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _features(seed, n, n, width)
    # one subset of every row: no random draw on either side, the same estimate
    metric = KernelInceptionDistance(feature=_Given(width), subsets=1, subset_size=n)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    theirs, _ = metric.compute()
    ours = kernel_inception_distance(real, fake, subsets=1, subset_size=n)
    assert ours == pytest.approx(float(theirs), rel=1e-9)


# --- disentanglement: disentanglement_lib's conventions, re-derived ------------------------------


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _mi(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (nats) of two discrete arrays from their contingency table."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1)
    return _entropy(table.sum(1)) + _entropy(table.sum(0)) - _entropy(table.reshape(-1))


def _bins(c: np.ndarray, bins: int = 20) -> np.ndarray:
    """Equal-width bins over the code's range, the maximum in the last bin."""
    scaled = (c - c.min()) / (c.max() - c.min()) * bins
    return np.minimum(np.floor(scaled), bins - 1).astype(int)


def _reference_mig(codes: np.ndarray, factors: np.ndarray) -> float:
    gaps = []
    for f in factors.T:
        mi = sorted((_mi(_bins(c), f) for c in codes.T), reverse=True)
        gaps.append((mi[0] - mi[1]) / _entropy(np.unique(f, return_counts=True)[1]))
    return float(np.mean(gaps))


def _shapes_like(n: int, seed: int, noise: float, mix: float = 0.0):
    """Factors on a small grid (3, 6, 10, 8 and 8 values) and codes that hold them:
    one code per factor (plus ``mix`` of the next factor, plus noise) and a nuisance code."""
    rng = np.random.default_rng(seed)
    sizes = np.array([3, 6, 10, 8, 8])
    factors = rng.integers(0, sizes, size=(n, len(sizes)))
    scaled = factors / (sizes - 1)
    codes = scaled + mix * np.roll(scaled, -1, axis=1) + noise * rng.normal(size=scaled.shape)
    codes = np.concatenate([codes, rng.normal(size=(n, 1))], axis=1)
    return codes, factors, sizes


@pytest.mark.parametrize("noise, mix", [(0.01, 0.0), (0.1, 0.8)])
def test_mig_follows_disentanglement_lib(noise, mix):
    codes, factors, _ = _shapes_like(3000, 0, noise, mix)
    assert dis.mig(codes, factors) == pytest.approx(_reference_mig(codes, factors), abs=1e-9)


def _reference_sap(codes, factors, test_codes, test_factors) -> float:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    scores = np.zeros((codes.shape[1], factors.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(codes.shape[1]):
            for j in range(factors.shape[1]):
                clf = LinearSVC(C=0.01, class_weight="balanced").fit(codes[:, [i]], factors[:, j])
                scores[i, j] = np.mean(clf.predict(test_codes[:, [i]]) == test_factors[:, j])
    top = np.sort(scores, axis=0)
    return float(np.mean(top[-1] - top[-2]))


@pytest.mark.parametrize("noise, mix", [(0.3, 0.5)])
def test_sap_follows_disentanglement_lib(noise, mix):
    codes, factors, _ = _shapes_like(1500, 1, noise, mix)
    test_codes, test_factors, _ = _shapes_like(600, 2, noise, mix)
    ours = dis.sap(codes, factors, test=(test_codes, test_factors))
    assert ours == pytest.approx(_reference_sap(codes, factors, test_codes, test_factors), abs=1e-9)


def _reference_dci(codes, factors, test_codes, test_factors) -> dict[str, float]:
    from scipy.stats import entropy
    from sklearn.ensemble import GradientBoostingClassifier

    importance = np.zeros((codes.shape[1], factors.shape[1]))
    accuracy = []
    for j in range(factors.shape[1]):
        model = GradientBoostingClassifier(random_state=0).fit(codes, factors[:, j])
        importance[:, j] = np.abs(model.feature_importances_)
        accuracy.append(np.mean(model.predict(test_codes) == test_factors[:, j]))
    per_code = 1.0 - entropy(importance.T + 1e-11, base=importance.shape[1])
    per_factor = 1.0 - entropy(importance + 1e-11, base=importance.shape[0])
    return {"disentanglement": float(np.sum(per_code * importance.sum(1) / importance.sum())),
            "completeness": float(np.sum(per_factor * importance.sum(0) / importance.sum())),
            "informativeness": float(np.mean(accuracy))}


def test_dci_scores_of_an_importance_matrix_follow_disentanglement_lib():
    rng = np.random.default_rng(3)
    from scipy.stats import entropy

    for shape in ((6, 5), (10, 3), (4, 4)):
        r = rng.random(shape) ** 3
        d, c = dis.dci_scores(r)
        per_code = 1.0 - entropy(r.T + 1e-11, base=r.shape[1])
        per_factor = 1.0 - entropy(r + 1e-11, base=r.shape[0])
        assert d == pytest.approx(np.sum(per_code * r.sum(1) / r.sum()), abs=1e-12)
        assert c == pytest.approx(np.sum(per_factor * r.sum(0) / r.sum()), abs=1e-12)


def test_dci_follows_disentanglement_libs_boosted_trees():
    """On entangled codes (each factor's code mixed with the next factor) and on clean ones. The
    boosted trees cost about 10 ms each (one per class per round, 100 rounds), so a small case:
    200 points, two factors of 3 and 6 values; aepipe's DCI fits on a seeded subset when given
    more than ``max_train`` points, which is checked against the reference on that subset."""
    for noise, mix, cut in ((0.05, 0.7, None), (0.01, 0.0, 120)):
        codes, factors, _ = _shapes_like(200, 4, noise, mix)
        test_codes, test_factors, _ = _shapes_like(150, 5, noise, mix)
        keep = [0, 1]
        ours = dis.dci(codes, factors[:, keep], test=(test_codes, test_factors[:, keep]), max_train=cut)
        fit = np.arange(len(codes)) if cut is None else np.sort(np.random.default_rng(0).permutation(len(codes))[:cut])
        theirs = _reference_dci(codes[fit], factors[fit][:, keep], test_codes, test_factors[:, keep])
        assert ours == pytest.approx(theirs, abs=1e-9), (ours, theirs)
        if mix:
            assert ours["completeness"] < 0.7  # sees the entanglement
        else:
            assert min(ours.values()) > 0.8, ours


def _reference_factorvae(represent, sizes: np.ndarray, seed: int, batch: int = 64, n_train: int = 10_000,
                         n_eval: int = 5_000, n_variance: int = 10_000) -> float:
    """The FactorVAE score as disentanglement_lib computes it, drawing from the generative process
    (factors uniform over the grid, ``represent`` maps factors to codes)."""
    rng = np.random.default_rng(seed)
    draw = lambda n: rng.integers(0, sizes, size=(n, len(sizes)))  # noqa: E731
    variances = represent(draw(n_variance)).var(axis=0, ddof=1)
    active = np.sqrt(variances) >= 0.05

    def votes(n: int) -> np.ndarray:
        out = np.zeros((len(sizes), len(variances)), dtype=np.int64)
        for _ in range(n):
            k = rng.integers(len(sizes))
            f = draw(batch)
            f[:, k] = f[0, k]
            local = represent(f).var(axis=0, ddof=1)
            out[k, np.argmin(local[active] / variances[active])] += 1
        return out

    fit = votes(n_train)
    classifier = fit.argmax(axis=0)
    scored = votes(n_eval)
    return float(scored[classifier, np.arange(scored.shape[1])].sum() / scored.sum())


@pytest.mark.parametrize("noise, mix", [(0.1, 1.0)])
def test_factorvae_score_is_close_to_disentanglement_libs(noise, mix):
    sizes = np.array([3, 6, 10, 8, 8])
    nuisance = np.random.default_rng(7)

    def represent(f: np.ndarray) -> np.ndarray:
        scaled = f / (sizes - 1)
        codes = scaled + mix * np.roll(scaled, -1, axis=1) + noise * nuisance.normal(size=scaled.shape)
        return np.concatenate([codes, 0.01 * nuisance.normal(size=(len(f), 1))], axis=1)  # one pruned dimension

    rng = np.random.default_rng(8)
    pool = rng.integers(0, sizes, size=(20_000, len(sizes)))
    theirs = _reference_factorvae(represent, sizes, seed=9, n_train=3000, n_eval=2000, n_variance=5000)
    ours = dis.factorvae_score(represent(pool), pool, n_train=3000, n_eval=2000, seed=9)
    assert ours == pytest.approx(theirs, abs=0.03), (ours, theirs)
