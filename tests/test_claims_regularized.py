"""Sparse, denoising and contractive autoencoders do what their names promise on real data
(scikit-learn's digits), each against a vanilla autoencoder of the same size and budget."""

from __future__ import annotations

import pytest

from aepipe_plugins.regularizers.contractive import jacobian_frobenius_sq
from aepipe_plugins.corruptions.noise import denoising_mse
from aepipe_plugins.regularizers.sparsity import code_statistics

from helpers import train_file

BUDGET = "train.epochs=40"


def _train(pm, name, *overrides):
    return train_file(pm, name, BUDGET, *overrides)


@pytest.fixture(scope="module")
def vanilla64(tmp_path_factory):
    """The vanilla baseline (64 -> 64 one-layer sigmoid, 40 epochs) shared by the comparisons."""
    import os

    from aepipe import tracking
    from aepipe.plugins import get_plugin_manager

    os.environ["AEPIPE_HOME"] = str(tmp_path_factory.mktemp("v64") / "mlruns")
    tracking.store.forget()
    try:
        return _train(get_plugin_manager(), "vanilla", "model.code_dim=64")
    finally:
        del os.environ["AEPIPE_HOME"]


@pytest.mark.slow
def test_sparse_code_meets_its_target_activation(aepipe_pm, store):
    """KL sparsity with rho = 0.05 on a 128-unit code: we see a mean activation of 0.057 and
    54% of units below 0.05 per input; the vanilla code of the same size averages 0.51 with 3%
    near zero."""
    sparse = _train(aepipe_pm, "sparse")
    vanilla = _train(aepipe_pm, "vanilla", "model.code_dim=128")
    rho = sparse.model.regularizers["kl-sparsity"].config.rho
    s = code_statistics(sparse.model, sparse.data.x_test, None)
    v = code_statistics(vanilla.model, vanilla.data.x_test, None)
    assert abs(s["mean_activation"] - rho) < 0.02, s
    assert v["mean_activation"] > 5 * s["mean_activation"], (v, s)
    assert s["near_zero_share"] > 0.4 and s["near_zero_share"] > 5 * v["near_zero_share"], (s, v)


@pytest.mark.slow
@pytest.mark.parametrize("corruption", [
    ["model.corruption.name=gaussian", "model.corruption.sigma=0.3"],
    ["model.corruption.name=masking", "model.corruption.nu=0.3"],
    ["model.corruption.name=salt-and-pepper", "model.corruption.nu=0.2"],
], ids=["gaussian", "masking", "salt-and-pepper"])
def test_denoising_restores_clean_inputs_better_than_vanilla(aepipe_pm, store, vanilla64, corruption):
    """From corrupted test inputs, the denoising autoencoder's reconstruction is closer to the
    clean input than the vanilla one's (we see 13-17% lower squared error for each type)."""
    dae = _train(aepipe_pm, "denoising", *corruption)
    noise = dae.model.corruption
    ours = denoising_mse(dae.model, noise, dae.data.x_test, None)
    theirs = denoising_mse(vanilla64.model, noise, vanilla64.data.x_test, None)
    assert ours < 0.95 * theirs, (ours, theirs)
    assert dae.metrics["test_denoising_mse"] == pytest.approx(ours, rel=1e-5)  # the logged score


@pytest.mark.slow
def test_contractive_encoder_is_contracting(aepipe_pm, store, vanilla64):
    """lambda = 0.5: the test-set ||dh/dx||_F^2 falls to about 7% of the vanilla encoder's."""
    cae = _train(aepipe_pm, "contractive")
    ours = float(jacobian_frobenius_sq(cae.model.encoder, cae.data.x_test).mean().detach())
    theirs = float(jacobian_frobenius_sq(vanilla64.model.encoder, vanilla64.data.x_test).mean().detach())
    assert ours <= 0.5 * theirs, (ours, theirs)
    assert cae.metrics["test_jacobian_fro_sq"] == pytest.approx(ours, rel=1e-4)
