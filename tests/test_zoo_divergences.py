"""The divergence zoo (issue 21): InfoVAE, WAE-MMD and SWAE match the aggregate posterior to the
prior; the RAE (L2 and gradient-penalty forms) samples through a GMM fitted on its codes.

Fast tests pin the pieces against direct computations (the kernels and the MMD, the sliced
Wasserstein distance, the gradient penalty on a one-layer decoder); the ``slow`` claims train
each model once per module on the digits and judge it on the held-out test split."""

from __future__ import annotations

import math

import pytest
import torch

from aepipe.config import resolve
from aepipe.errors import ConfigError
from aepipe.model import build_model
from aepipe.training import load_data, train
from aepipe.training.metrics import split_metrics
from aepipe_plugins.regularizers.kernels import kernel_matrix, kernel_scale, mmd, sliced_wasserstein
from aepipe_plugins.regularizers.divergences import EVAL_SEED, decoder_gradient_sq

from helpers import built
from conftest import PIPELINES, QUIET

#: the models here train on one CPU thread (zoo_shared.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _model(pm, model: dict, code_dim: int = 3):
    tree = {"data": {"name": "digits"}, "model": {"code_dim": code_dim, "encoder": {"name": "mlp", "hidden": [16]},
                                                  "decoder": {"name": "mlp", "hidden": [16]}, **model}}
    _, model, data = built(pm, tree=tree, seed=0, seed_before_data=True)
    return model, data


# --- kernels, MMD, sliced Wasserstein --------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_kernel_values_at_the_wae_scale(kernel):
    """C = 2 d sigma^2; at squared distance C the IMQ kernel is 1/2 and the RBF exp(-1); scales add."""
    assert kernel_scale(4) == 8.0 and kernel_scale(4, 0.5) == 4.0
    a = torch.zeros(1, 4, dtype=torch.float64)
    b = torch.tensor([[math.sqrt(8.0), 0.0, 0.0, 0.0]], dtype=torch.float64)
    at_c = 0.5 if kernel == "imq" else math.exp(-1.0)
    assert float(kernel_matrix(a, b, kernel, 8.0)) == pytest.approx(at_c)
    at_2c = 2 / 3 if kernel == "imq" else math.exp(-0.5)  # the same distance at scale 2C
    assert float(kernel_matrix(a, b, kernel, 8.0, (1.0, 2.0))) == pytest.approx(at_c + at_2c)
    with pytest.raises(ValueError, match="unknown kernel 'cauchy'"):
        kernel_matrix(a, b, "cauchy", 8.0)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_is_the_unbiased_statistic_near_zero_for_one_distribution_and_positive_for_shifted_samples(kernel):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)

    def k(u, v):
        sq = float(((u - v) ** 2).sum())
        return math.exp(-sq / 4.0) if kernel == "rbf" else 4.0 / (4.0 + sq)

    by_hand = (sum(k(a[i], a[j]) for i in range(3) for j in range(3) if i != j) / 6
               + sum(k(b[i], b[j]) for i in range(4) for j in range(4) if i != j) / 12
               - 2 * sum(k(a[i], b[j]) for i in range(3) for j in range(4)) / 12)
    assert float(mmd(a, b, kernel)) == pytest.approx(by_hand)  # C = 2 * 2 * 1 = 4 by default

    x, y = torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g)
    same, shifted = float(mmd(x, y, kernel)), float(mmd(x, y + 1.0, kernel))
    assert abs(same) < 2e-3, same
    assert shifted > 0.02 and shifted > 20 * abs(same), (same, shifted)
    assert float(mmd(x, y + 0.5, kernel)) < shifted  # grows with the shift
    with pytest.raises(ValueError, match="at least 2 samples on each side, got 1 and 500"):
        mmd(x[:1], y, kernel)


def test_sliced_wasserstein_is_zero_for_equal_sets_and_the_projected_shift_for_shifted_ones():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g, dtype=torch.float64)
    # the order does not matter
    assert float(sliced_wasserstein(a, a[torch.randperm(300, generator=g)], projections=20)) == 0.0
    theta = torch.randn(5, 7, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    # a shift moves every sorted projection on direction t by t . shift: SW_2^2 = mean_t (t . shift)^2
    expected = float(((shift @ theta) ** 2).mean())
    assert float(sliced_wasserstein(a, a + shift, directions=theta)) == pytest.approx(expected)
    assert float(sliced_wasserstein(a, a + shift, p=1.0, directions=theta)) == pytest.approx(
        float((shift @ theta).abs().mean())
    )
    torch.manual_seed(0)
    near = float(sliced_wasserstein(a, torch.randn(300, 5, dtype=torch.float64), projections=50))
    far = float(sliced_wasserstein(a, 3 * torch.randn(300, 5, dtype=torch.float64), projections=50))
    assert near < 0.05 < 1.0 < far, (near, far)
    with pytest.raises(ValueError, match=r"pairs equally many samples; got shapes \(300, 5\) and \(299, 5\)"):
        sliced_wasserstein(a, a[1:])


# --- the RAE's penalties ----------------------------------------------------------------------------


def test_gradient_penalty_equals_the_hand_computation_on_a_one_layer_decoder(aepipe_pm):
    """D(z) = sigmoid(W z + b): grad_z sum_j D_j = W^T s(1 - s) and |dD/dz|_F^2 = sum_j (s_j(1 - s_j))^2 |W_j|^2."""
    model, data = _model(aepipe_pm, {"decoder": {"name": "one-layer"}, "bottleneck": {"name": "deterministic"},
                                     "regularizers": {"decoder-gradient": {"lam": 0.5}}})
    w, bias = model.decoder.linear.weight, model.decoder.linear.bias  # (64, 3), (64,)
    z = torch.randn(5, 3)
    with torch.no_grad():
        s = torch.sigmoid(z @ w.T + bias)
        slope = s * (1 - s)  # (5, 64)
        summed = (slope @ w).pow(2).sum(-1)
        frobenius = (slope.pow(2) @ w.pow(2).sum(-1, keepdim=True)).squeeze(-1)
    assert torch.allclose(decoder_gradient_sq(model, z), summed, atol=1e-6)
    assert torch.allclose(decoder_gradient_sq(model, z, norm="frobenius"), frobenius, atol=1e-6)
    # in a training step the penalty reuses the step's graph, and its gradient reaches the encoder
    x, y = data.train.head(8)
    loss, terms, step = model.step(x, y)
    with torch.no_grad():
        s = torch.sigmoid(step.z @ w.T + bias)
        expected = 0.5 * ((s * (1 - s)) @ w).pow(2).sum(-1).mean()
    assert float(terms["penalty.decoder-gradient"].detach()) == pytest.approx(float(expected), rel=1e-5)
    grad = torch.autograd.grad(terms["penalty.decoder-gradient"], model.encoder.head.weight, retain_graph=True)[0]
    assert grad.abs().sum() > 0
    with torch.no_grad():
        slope = s * (1 - s)
        frobenius = (slope.pow(2) @ w.pow(2).sum(-1, keepdim=True)).squeeze(-1)
    in_step = decoder_gradient_sq(model, step.z, None, "frobenius", step.output)
    assert torch.allclose(in_step.detach(), frobenius, atol=1e-6)
    assert torch.autograd.grad(in_step.mean(), model.encoder.head.weight)[0].abs().sum() > 0
    with pytest.raises(ValueError, match="unknown norm 'spectral'"):
        decoder_gradient_sq(model, z, norm="spectral")
    assert float(model.step(x, y, training=False)[1]["penalty.decoder-gradient"].detach()) == pytest.approx(
        float(expected), rel=1e-5
    )


def test_rae_l2_penalises_the_code_and_the_decoder_weights_only(aepipe_pm):
    pipeline = resolve(aepipe_pm, PIPELINES / "rae-l2.toml", ["model.regularizers.weight-l2.lam=0.01"])
    torch.manual_seed(0)
    data = load_data(pipeline, torch.device("cpu"))
    model = build_model(pipeline, data)
    assert model.prior is None and model.sampler.name == "gmm" and model.bottleneck.name == "deterministic"
    x, y = data.train.head(16)
    with torch.no_grad():
        _, terms, step = model.step(x, y)
    code = step.encoding.code
    assert float(terms["penalty.code-l2"]) == pytest.approx(float(1e-4 * 0.5 * code.pow(2).sum(-1).mean()), rel=1e-5)
    decoder_weights = sum(float(p.detach().pow(2).sum()) for p in model.decoder.parameters() if p.dim() >= 2)
    assert float(terms["penalty.weight-l2"]) == pytest.approx(0.01 * decoder_weights, rel=1e-5)


# --- composition, metrics and errors ----------------------------------------------------------------


def test_info_vae_weights_the_kl_and_the_mmd_as_zhao_et_al(aepipe_pm):
    """KL weight 1 - alpha, MMD weight alpha + lambda - 1 (alpha = 0, lambda = 10)."""
    from aepipe_plugins.families.divergences import INFO_ALPHA, INFO_LAMBDA

    assert (INFO_ALPHA, INFO_LAMBDA) == (0.0, 10.0)
    for pipeline in (
        resolve(aepipe_pm, tree={"variant": "info-vae", "data": {"name": "digits"}}),
        resolve(aepipe_pm, PIPELINES / "info-vae.toml"),
        resolve(aepipe_pm, PIPELINES / "info-vae-mnist5k.toml"),
    ):
        regs = pipeline.regularizers
        assert regs["kl"].config.beta == 1 - INFO_ALPHA
        assert regs["prior-mmd"].config.lam == INFO_ALPHA + INFO_LAMBDA - 1 and regs["prior-mmd"].config.kernel == "imq"
        assert pipeline.components["bottleneck"].name == "gaussian"


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_the_mmd_regularizer_logs_its_own_mmd_against_fixed_prior_draws(aepipe_pm, kernel):
    model, data = _model(aepipe_pm, {"bottleneck": {"name": "deterministic"}, "prior": {"name": "standard-normal"},
                                     "regularizers": {"prior-mmd": {"lam": 3.0, "kernel": kernel,
                                                                    "scales": [0.5, 2.0]}}})
    metrics = split_metrics(model, data.val)  # one batch: the whole validation split
    with torch.no_grad():
        codes = model.encode(data.val.x).code
    torch.manual_seed(EVAL_SEED)
    draws = torch.randn(len(codes), 3)
    expected = float(mmd(codes, draws, kernel, kernel_scale(3), (0.5, 2.0)))
    assert metrics["mmd"] == pytest.approx(expected, rel=1e-4)
    assert metrics["mmd"] == pytest.approx(split_metrics(model, data.val)["mmd"])  # the same draws each time
    assert metrics["penalty.prior-mmd"] > 0 and "prior_mmd" in metrics


def test_swae_logs_the_sliced_wasserstein_distance(aepipe_pm):
    model, data = _model(aepipe_pm, {"bottleneck": {"name": "deterministic"}, "prior": {"name": "standard-normal"},
                                     "regularizers": {"sliced-wasserstein": {"lam": 2.0, "projections": 10}}})
    metrics = split_metrics(model, data.val)
    with torch.no_grad():
        codes = model.encode(data.val.x).code
    torch.manual_seed(EVAL_SEED)
    draws = torch.randn(len(codes), 3)  # the prior's draws, then the directions
    theta = torch.randn(3, 10)
    expected = float(sliced_wasserstein(codes, draws, directions=theta / theta.norm(dim=0)))
    assert metrics["sliced_wasserstein"] == pytest.approx(expected, rel=1e-4)
    assert metrics["penalty.sliced-wasserstein"] > 0


@pytest.mark.parametrize("regularizer", ["prior-mmd", "sliced-wasserstein"])
def test_matching_the_prior_needs_a_prior(aepipe_pm, regularizer):
    with pytest.raises(
        ConfigError, match=rf"regularizer '{regularizer}' matches the codes to a prior: set \[model\.prior\] name"
    ) as exc:
        _model(aepipe_pm, {"bottleneck": {"name": "deterministic"}, "regularizers": {regularizer: {}}})
    assert "\n" not in str(exc.value)


def test_bad_settings_are_one_line_errors(aepipe_pm):
    with pytest.raises(ConfigError, match=r"'model\.regularizers\.prior-mmd\.kernel' = 'cauchy'"):
        resolve(aepipe_pm, PIPELINES / "wae-mmd.toml", ["model.regularizers.prior-mmd.kernel='cauchy'"])
    with pytest.raises(ConfigError, match=r"'model\.regularizers\.sliced-wasserstein\.projections' = 0"):
        resolve(aepipe_pm, PIPELINES / "swae.toml", ["model.regularizers.sliced-wasserstein.projections=0"])
    with pytest.raises(ConfigError, match=r"'model\.regularizers\.decoder-gradient\.norm' = 'spectral'"):
        resolve(aepipe_pm, PIPELINES / "rae-gp.toml", ["model.regularizers.decoder-gradient.norm='spectral'"])


# --- the claims: trained once per module, judged on the test split ----------------------------------

EPOCHS = "train.epochs=15"


def _fixed_rbf_mmd(a: torch.Tensor, b: torch.Tensor) -> float:
    """The unbiased MMD^2 with one Gaussian kernel of fixed bandwidth h^2 = code_dim, written
    here independently of the plugin."""
    h2 = a.shape[1]
    n, m = len(a), len(b)
    kaa = torch.exp(-torch.cdist(a, a).pow(2) / (2 * h2))
    kbb = torch.exp(-torch.cdist(b, b).pow(2) / (2 * h2))
    kab = torch.exp(-torch.cdist(a, b).pow(2) / (2 * h2))
    return float((kaa.sum() - kaa.trace()) / (n * (n - 1)) + (kbb.sum() - kbb.trace()) / (m * (m - 1)) - 2 * kab.mean())


@pytest.fixture(scope="module")
def matched(tmp_path_factory):
    """InfoVAE, WAE-MMD, SWAE and the same deterministic MLP autoencoder without a penalty
    (plain), 15 epochs each on the digits."""
    from aepipe.plugins import get_plugin_manager

    from conftest import store_at

    pm = get_plugin_manager()
    runs = {}
    with store_at(tmp_path_factory.mktemp("divergences") / "mlruns"):
        for key, name, extra in (("info-vae", "info-vae", []), ("wae-mmd", "wae-mmd", []), ("swae", "swae", []),
                                 ("plain", "wae-mmd", ["model.regularizers.prior-mmd.enabled=false"])):
            torch.manual_seed(0)
            runs[key] = train(resolve(pm, PIPELINES / f"{name}.toml", [*QUIET, EPOCHS, *extra]), pm)
    return runs


@pytest.mark.slow
def test_codes_of_the_test_split_match_the_prior_better_than_a_plain_autoencoders(matched):
    """The aggregate posterior (one draw per test input; the code itself where it is
    deterministic) against as many N(0, I) samples: a Gaussian-kernel MMD of fixed bandwidth."""
    scores = {}
    for key, run in matched.items():
        torch.manual_seed(1)
        with torch.no_grad():
            z = run.model.eval().encode(run.data.x_test).z
        scores[key] = _fixed_rbf_mmd(z, torch.randn_like(z))
    plain = scores.pop("plain")
    # we see 0.0013 (info-vae), 0.017 (wae-mmd), 0.016 (swae) against 0.29 (plain)
    assert plain > 0.1, plain
    for key, value in scores.items():
        assert value < plain / 5, (key, value, plain)
    # each logs its own divergence on the test split
    assert {"test_mmd", "test_prior_mmd"} <= set(matched["wae-mmd"].metrics)
    assert {"test_mmd", "test_kl", "test_iw_nll"} <= set(matched["info-vae"].metrics)
    assert "test_sliced_wasserstein" in matched["swae"].metrics
    assert matched["info-vae"].metrics["test_kl"] > 0.5  # the code still carries information: no collapse


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    """RAE-L2, RAE-GP (each with its GMM sampler, fitted after training) and the VAE, 15 epochs
    each on the digits, and the ``domain`` feature space of the digits (trained once, cached in
    the module's store)."""
    from aepipe.evaluation.generation import feature_space
    from aepipe.plugins import get_plugin_manager

    from conftest import store_at

    pm = get_plugin_manager()
    runs = {}
    with store_at(tmp_path_factory.mktemp("rae") / "mlruns"):
        for name in ("rae-l2", "rae-gp", "vae"):
            torch.manual_seed(0)
            runs[name] = train(resolve(pm, PIPELINES / f"{name}.toml", [*QUIET, EPOCHS]), pm)
        space = feature_space("domain", runs["vae"].data, torch.device("cpu"), pm)
    return runs, space


@pytest.mark.slow
def test_rae_gmm_samples_score_a_better_fid_than_vae_prior_samples(generators):
    """Ghosh et al. 2020's claim at a small budget: 2,000 decoded draws of each model against
    the test split, in the domain feature space (the digits' own classifier)."""
    from aepipe.evaluation.generation import generation_metrics

    runs, space = generators
    real = space.features(runs["vae"].data.x_test)
    fid = {}
    for name, run in runs.items():
        model = run.model.eval()
        assert (model.sampler is not None and bool(model.sampler.fitted)) == name.startswith("rae")
        torch.manual_seed(0)
        with torch.no_grad():
            fake = space.features(model.sample(2000))
        fid[name] = generation_metrics(real, fake)["fid"]
    # we see 1.55 (rae-l2) and 1.47 (rae-gp) against 6.95 (vae) (the domain space with its probe, issue 31)
    assert fid["rae-l2"] < fid["vae"] and fid["rae-gp"] < fid["vae"], fid
    # the GMM is what makes the deterministic code samplable: N(0, I) codes decode far worse
    model = runs["rae-l2"].model
    torch.manual_seed(0)
    with torch.no_grad():
        naive = space.features(model.decode(torch.randn(2000, model.spec.code_dim)))
    assert fid["rae-l2"] < generation_metrics(real, naive)["fid"], fid  # we see 10.0
