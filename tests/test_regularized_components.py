"""Sparse, denoising and contractive components: formulas, statistics and bad settings."""

from __future__ import annotations

import pytest
import torch

from aepipe.components import ModelSpec
from aepipe.config import resolve
from aepipe.errors import ConfigError
from aepipe_plugins.regularizers.contractive import jacobian_frobenius_sq
from aepipe_plugins.corruptions.noise import GaussianNoise, Masking, SaltAndPepper
from aepipe_plugins.regularizers.sparsity import bernoulli_kl
from aepipe_plugins.networks import basic as nets

from helpers import built
from conftest import PIPELINES


def _model(pm, name, *overrides):
    _, model, data = built(pm, PIPELINES / f"{name}.toml", overrides)
    return model, data


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.rand(200_000, 1, dtype=torch.float64).reshape(2000, 100) * 0.8 + 0.1


def test_masking_statistics(x):
    torch.manual_seed(1)
    out = Masking(Masking.Config(nu=0.3), ModelSpec(100, 4))(x)
    assert float((out == 0).double().mean()) == pytest.approx(0.3, abs=0.005)
    kept = out != 0
    assert torch.equal(out[kept], x[kept])


def test_salt_and_pepper_statistics(x):
    torch.manual_seed(2)
    out = SaltAndPepper(SaltAndPepper.Config(nu=0.2), ModelSpec(100, 4))(x)
    assert float((out == 0).double().mean()) == pytest.approx(0.1, abs=0.004)
    assert float((out == 1).double().mean()) == pytest.approx(0.1, abs=0.004)
    assert float((out != x).double().mean()) == pytest.approx(0.2, abs=0.005)


def test_gaussian_noise_level(x):
    torch.manual_seed(3)
    noise = GaussianNoise(GaussianNoise.Config(sigma=0.05, clip=False), ModelSpec(100, 4))
    diff = noise(x) - x
    assert float(diff.std()) == pytest.approx(0.05, rel=0.01) and abs(float(diff.mean())) < 1e-3
    clipped = GaussianNoise(GaussianNoise.Config(sigma=2.0), ModelSpec(100, 4))(x)
    assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0


def test_corruption_is_seeded(x):
    m = Masking(Masking.Config(nu=0.5), ModelSpec(100, 4))
    torch.manual_seed(7)
    a = m(x)
    torch.manual_seed(7)
    assert torch.equal(a, m(x))


def test_corruption_applies_in_training_only(aepipe_pm):
    model, data = _model(aepipe_pm, "denoising", "model.corruption.nu=1.0")
    xb = data.x_train[:32]
    _, _, step = model.step(xb, training=True)
    assert torch.equal(step.x_tilde, torch.zeros_like(xb))  # nu = 1 masks everything
    _, _, step = model.step(xb, training=False)
    assert torch.equal(step.x_tilde, xb)


def test_closed_form_jacobian_equals_autograd():
    torch.manual_seed(0)
    spec = ModelSpec(input_dim=64, code_dim=32)
    enc = nets.OneLayerEncoder(nets.OneLayerEncoderConfig(activation="sigmoid"), spec).double()
    x = torch.rand(50, 64, dtype=torch.float64)
    closed = jacobian_frobenius_sq(enc, x, method="closed-form")
    exact = jacobian_frobenius_sq(enc, x, method="autograd")
    assert torch.allclose(closed, exact, atol=1e-5, rtol=0)
    # the closed form is what "auto" uses; a non-sigmoid layer falls back to autograd
    assert torch.equal(jacobian_frobenius_sq(enc, x), closed)
    tanh = nets.OneLayerEncoder(nets.OneLayerEncoderConfig(activation="tanh"), spec).double()
    j = torch.func.vmap(torch.func.jacrev(lambda v: tanh(v[None]).code[0]))(x)
    assert torch.allclose(jacobian_frobenius_sq(tanh, x), j.pow(2).sum((1, 2)))


def test_random_projection_estimate_is_unbiased():
    torch.manual_seed(0)
    spec = ModelSpec(input_dim=30, code_dim=8)
    enc = nets.MLPEncoder(nets.MLPEncoderConfig(hidden=[16], activation="tanh"), spec).double()
    x = torch.rand(20, 30, dtype=torch.float64)
    exact = jacobian_frobenius_sq(enc, x, method="autograd")
    estimate = jacobian_frobenius_sq(enc, x, method="projection", projections=4000)
    assert torch.allclose(estimate, exact, rtol=0.1)
    assert float(estimate.mean().detach()) == pytest.approx(float(exact.mean().detach()), rel=0.03)


def test_contractive_penalty_trains_with_every_method(aepipe_pm):
    for method in ("closed-form", "autograd", "projection"):
        model, data = _model(
            aepipe_pm, "contractive", f"model.regularizers.contractive.method={method}", "model.code_dim=8"
        )
        loss, terms, _ = model.step(data.x_train[:16])
        loss.backward()
        assert float(terms["penalty.contractive"].detach()) > 0
        assert model.encoder.head.weight.grad is not None


def test_kl_sparsity_formula():
    rho_hat = torch.tensor([0.05, 0.5, 0.01])
    expected = 0.05 * torch.log(0.05 / rho_hat) + 0.95 * torch.log(0.95 / (1 - rho_hat))
    assert torch.allclose(bernoulli_kl(0.05, rho_hat), expected)
    assert float(bernoulli_kl(0.05, torch.tensor(0.05))) == pytest.approx(0.0, abs=1e-7)


def test_top_k_keeps_exactly_k_units():
    spec = ModelSpec(input_dim=20, code_dim=16)
    enc = nets.OneLayerEncoder(nets.OneLayerEncoderConfig(activation="sigmoid", top_k=3), spec)
    code = enc(torch.rand(10, 20)).code
    assert ((code != 0).sum(1) == 3).all()
    with pytest.raises(ConfigError, match="top_k = 17 exceeds code_dim = 16"):
        nets.OneLayerEncoder(nets.OneLayerEncoderConfig(top_k=17), spec)


BAD = [
    (["model.regularizers.kl-sparsity.rho=1.0"], "sparse",
     r"'model\.regularizers\.kl-sparsity\.rho' = 1\.0: expected float: Input should be less than 1"),
    (["model.regularizers.kl-sparsity.rho=0"], "sparse",
     r"'model\.regularizers\.kl-sparsity\.rho' = 0: .*greater than 0"),
    (["model.regularizers.kl-sparsity.beta=-1"], "sparse", r"kl-sparsity\.beta' = -1: .*greater than or equal to 0"),
    (["model.corruption.name=gaussian", "model.corruption.sigma=-0.1"], "denoising",
     r"'model\.corruption\.sigma' = -0\.1: .*greater than or equal to 0"),
    (["model.corruption.nu=1.5"], "denoising", r"'model\.corruption\.nu' = 1\.5: .*less than or equal to 1"),
    (["model.regularizers.contractive.lam=-2"], "contractive",
     r"'model\.regularizers\.contractive\.lam' = -2: .*greater than or equal to 0"),
]


@pytest.mark.parametrize("overrides,pipeline,pattern", BAD)
def test_bad_settings_are_one_line_errors_naming_the_setting(aepipe_pm, overrides, pipeline, pattern):
    with pytest.raises(ConfigError, match=pattern) as exc:
        resolve(aepipe_pm, PIPELINES / f"{pipeline}.toml", overrides)
    assert "\n" not in str(exc.value)


def test_kl_sparsity_refuses_a_non_sigmoid_code(aepipe_pm):
    with pytest.raises(ConfigError,
                       match=r"model\.regularizers\.kl-sparsity \(regularizer 'kl-sparsity'\): regularizer "
                             r"'kl-sparsity' needs a sigmoid code in \(0, 1\); encoder 'one-layer' gives codes in "
                             r"\(0\.0, inf\)"):
        _model(aepipe_pm, "sparse", "model.encoder.activation=relu")


def test_sparse_and_denoising_metrics_are_logged_each_epoch(aepipe_pm, store):
    from aepipe.training import train
    from mlflow import MlflowClient

    quiet = ["tracking.log_model=false", "tracking.log_images=false", "tracking.log_dataset=false", "train.epochs=3"]
    result = train(resolve(aepipe_pm, PIPELINES / "denoising.toml", quiet), aepipe_pm)
    c = MlflowClient()
    assert [m.step for m in c.get_metric_history(result.run_id, "val_denoising_mse")] == [1, 2, 3]
    logged = c.get_run(result.run_id).data.metrics
    assert "test_denoising_mse" in logged
    # a component's metrics come from the run's own components: no sparse component, no code.* metric
    assert not [k for k in logged if "code." in k], sorted(logged)
    result = train(resolve(aepipe_pm, PIPELINES / "sparse.toml", quiet), aepipe_pm)
    for key in ("val_code.mean_activation", "val_code.near_zero_share"):
        assert [m.step for m in c.get_metric_history(result.run_id, key)] == [1, 2, 3], key
    result = train(resolve(aepipe_pm, PIPELINES / "contractive.toml", quiet), aepipe_pm)
    assert [m.step for m in c.get_metric_history(result.run_id, "val_jacobian_fro_sq")] == [1, 2, 3]
