"""The vanilla family does what its name promises, on real data (scikit-learn's digits)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA

from helpers import train_file as _train


@pytest.mark.slow
def test_linear_autoencoder_recovers_pca(aepipe_pm, store):
    """Baldi & Hornik: a linear autoencoder trained with squared error spans PCA's top-k subspace.

    k = 4 because the digits' 4th and 5th principal variances differ by a factor of 1.5, so the
    top-4 subspace is well determined; past k = 5 the gaps shrink to a few percent and any
    finite optimisation leaves the last direction loosely fixed. With Adam's minibatch noise
    we see angles of about 1-6 degrees and an error within 0.5% of PCA's; a sigmoid encoder,
    a wrong likelihood or a broken decoder gives angles of 30-90 degrees.
    """
    result = _train(aepipe_pm, "linear")
    k = result.model.spec.code_dim
    assert k == 4
    x_train = result.data.x_train.numpy()
    pca = PCA(k).fit(x_train)
    w2 = result.model.decoder.weight.detach().numpy()  # (input, code): columns span the decoder's image
    angles = np.degrees(subspace_angles(w2, pca.components_.T))
    assert angles.max() < 10.0, f"principal angles {angles}"
    x_test = result.data.x_test.numpy()
    pca_mse = float(((pca.inverse_transform(pca.transform(x_test)) - x_test) ** 2).mean())
    assert result.metrics["test_mse"] <= 1.03 * pca_mse, (result.metrics["test_mse"], pca_mse)
    # and no better than PCA by more than noise: PCA is the optimum among rank-k linear maps
    assert result.metrics["test_mse"] >= 0.97 * pca_mse


def _weights(model):
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters() if p.dim() >= 2])


@pytest.mark.slow
def test_weight_penalties_do_what_they_promise(aepipe_pm, store):
    """Same architecture and budget: L1 zeroes far more weights; L2 shrinks the weight norm."""
    budget = ["train.epochs=40", "model.code_dim=32"]
    plain = _train(aepipe_pm, "vanilla", *budget)
    l1 = _train(aepipe_pm, "weight-l1", *budget)
    l2 = _train(aepipe_pm, "weight-l2", *budget)
    w0, w1, w2 = _weights(plain.model), _weights(l1.model), _weights(l2.model)
    assert len(w0) == len(w1) == len(w2)
    near_zero = lambda w: float((np.abs(w) < 1e-3).mean())  # noqa: E731
    assert near_zero(w1) > 0.3 and near_zero(w1) > 5 * near_zero(w0), (near_zero(w0), near_zero(w1))
    assert np.linalg.norm(w2) < 0.6 * np.linalg.norm(w0), (np.linalg.norm(w0), np.linalg.norm(w2))
    # the logged metrics agree with the weights
    assert l1.metrics["test_weight-l1.near_zero_share"] == pytest.approx(near_zero(w1), abs=1e-6)
    assert l2.metrics["test_weight-l2.l2_norm"] == pytest.approx(np.linalg.norm(w2), rel=1e-4)
    # the penalties are the stated formulas (biases excluded)
    lam1 = 1e-2
    assert l1.metrics["test_penalty.weight-l1"] == pytest.approx(lam1 * np.abs(w1).sum(), rel=1e-4)
    assert l2.metrics["test_penalty.weight-l2"] == pytest.approx(lam1 * (w2**2).sum(), rel=1e-4)
    # and they still reconstruct: the penalty does not destroy the model
    assert l2.metrics["test_mse"] < 0.06
