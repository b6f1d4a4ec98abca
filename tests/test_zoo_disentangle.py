"""The disentangling VAEs (beta-TCVAE, FactorVAE, DIP-VAE, capacity beta-VAE): their estimators
against direct computations, their settings and errors, and the claims each variant's name makes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import norm

from aepipe.components import ModelSpec
from aepipe.config import resolve
from aepipe.errors import ConfigError
from aepipe.model import build_model
from aepipe.training.step import optimizer_step
from aepipe_plugins.regularizers import tc_estimators as est
from aepipe_plugins.regularizers.disentangle import Capacity, TCDiscriminator
from helpers import built
from conftest import QUIET

#: the models here train on one CPU thread (zoo_shared.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _posteriors(correlated: bool, m: int = 256, d: int = 4, seed: int = 0):
    """M narrow Gaussian posteriors whose means are independent N(0, I) draws, or all but
    equal across dimensions (one shared factor): one draw z of each."""
    g = torch.Generator().manual_seed(seed)
    if correlated:
        mean = torch.randn(m, 1, generator=g) + 0.05 * torch.randn(m, d, generator=g)
    else:
        mean = torch.randn(m, d, generator=g)
    std = torch.full((m, d), 0.2)
    z = mean + std * torch.randn(m, d, generator=g)
    return z.unsqueeze(0), mean, std


# --- the estimators -------------------------------------------------------------------------


def test_the_minibatch_weighted_terms_match_a_direct_computation():
    """Each log density of Chen et al.'s minibatch-weighted estimator, computed term by term
    with scipy, and the three terms add up to log q(z | x) - log p(z)."""
    z, mean, std = _posteriors(False, m=12, d=3)
    log_pz = torch.as_tensor(norm.logpdf(z[0].numpy()).sum(-1)).unsqueeze(0).float()
    n_data = 1000
    mi, tc, dkl = est.kl_decomposition(z, mean, std, log_pz, n_data)
    zz, mu, sd = z[0].double().numpy(), mean.double().numpy(), std.double().numpy()
    m = len(zz)
    dens = norm.pdf(zz[:, None, :], mu[None], sd[None])  # (i, j, d): q(z_i,d | x_j)
    log_qzx = np.log(dens[np.arange(m), np.arange(m)]).sum(-1)
    log_qz = np.log(dens.prod(-1).sum(1) / (n_data * m))
    log_prod = np.log(dens.sum(1) / (n_data * m)).sum(-1)
    np.testing.assert_allclose(mi[0].numpy(), log_qzx - log_qz, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tc[0].numpy(), log_qz - log_prod, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dkl[0].numpy(), log_prod - log_pz[0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose((mi + tc + dkl)[0].numpy(), log_qzx - log_pz[0].numpy(), rtol=1e-4, atol=1e-4)
    # stratified sampling: the draw's own posterior weighs 1 / N, each other (N - 1) / (N (M - 1))
    w = np.full((m, m), (n_data - 1) / (n_data * (m - 1)))
    np.fill_diagonal(w, 1.0 / n_data)
    mi_s, tc_s, dkl_s = est.kl_decomposition(z, mean, std, log_pz, n_data, stratified=True)
    log_qz_s = np.log((w * dens.prod(-1)).sum(1))
    log_prod_s = np.log((w[:, :, None] * dens).sum(1)).sum(-1)
    np.testing.assert_allclose(mi_s[0].numpy(), log_qzx - log_qz_s, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tc_s[0].numpy(), log_qz_s - log_prod_s, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dkl_s[0].numpy(), log_prod_s - log_pz[0].numpy(), rtol=1e-4, atol=1e-4)


def test_stratified_sampling_over_the_whole_dataset_is_exact():
    """With N = M, stratified weights make q(z) the batch's exact mixture: independent codes
    then have a small TC, far below the minibatch-weighted value (which runs about
    D log N - log M above it)."""
    z, mean, std = _posteriors(False, m=256)
    mws = float(est.total_correlation(z, mean, std, 256))
    mss = float(est.total_correlation(z, mean, std, 256, stratified=True))
    mixture = torch.logsumexp(est.log_density_matrix(z[0], mean, std).sum(-1), 1) - math.log(256)
    _, tc, _ = est.kl_decomposition(z, mean, std, torch.zeros(1, 256), 256, stratified=True)
    marginals = (torch.logsumexp(est.log_density_matrix(z[0], mean, std), 1) - math.log(256)).sum(-1)
    assert torch.allclose(tc[0], mixture - marginals, atol=1e-4)
    assert 0.0 < mss < 2.0 < mws - 10.0, (mss, mws)
    assert mws - mss == pytest.approx(3 * math.log(256), abs=2.0)


def test_total_correlation_is_higher_for_correlated_codes():
    """Codes that share one factor across their 4 dimensions get a larger TC estimate than
    independent codes, whatever the seed (we see 18.1 vs 20.6 nats at N = 256: the
    minibatch-weighted estimator's bias is the same for both); N shifts the estimate by exactly
    (D - 1) log(N' / N)."""
    for seed in range(3):
        independent = float(est.total_correlation(*_posteriors(False, seed=seed), 256))
        correlated = float(est.total_correlation(*_posteriors(True, seed=seed), 256))
        assert correlated > independent + 1.5, (seed, independent, correlated)
        shifted = float(est.total_correlation(*_posteriors(True, seed=seed), 60_000))
        assert shifted - correlated == pytest.approx(3 * math.log(60_000 / 256), rel=1e-4)


def test_permuting_dimensions_keeps_marginals_and_breaks_dependence():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(500, 1, generator=g)
    z = torch.cat([shared, 2 * shared + 0.01 * torch.randn(500, 1, generator=g), torch.randn(500, 1, generator=g)], 1)
    p = est.permute_dims(z, torch.Generator().manual_seed(1))
    assert p.shape == z.shape
    for d in range(z.shape[1]):  # every column holds the same values: the marginals are kept
        assert torch.equal(p[:, d].sort().values, z[:, d].sort().values)
    assert np.corrcoef(z[:, 0], z[:, 1])[0, 1] > 0.99
    assert abs(np.corrcoef(p[:, 0], p[:, 1])[0, 1]) < 0.15  # the columns were shuffled independently
    assert not torch.equal(p[:, 0], z[:, 0])


def test_dip_covariances_against_monte_carlo():
    """Type i is the covariance of the means; type ii that of the aggregate posterior, checked
    against the sample covariance of many draws of the mixture."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(200, 3, generator=g) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.3]])
    std = torch.rand(200, 3, generator=g) + 0.2
    np.testing.assert_allclose(
        est.dip_covariance(mean, std, "i").numpy(), np.cov(mean.numpy().T, bias=True), rtol=1e-4, atol=1e-5
    )
    draws = (mean + std * torch.randn(2000, 200, 3, generator=g)).reshape(-1, 3)
    np.testing.assert_allclose(est.dip_covariance(mean, std, "ii").numpy(), np.cov(draws.numpy().T), atol=0.03)
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    assert float(est.off_diagonal_mass(cov)) == pytest.approx(0.5)
    assert float(est.diagonal_gap(cov)) == pytest.approx(1.0)


def test_the_capacity_schedule():
    assert [est.capacity(t, 100, 25.0) for t in (0, 10, 50, 100, 400)] == [0.0, 2.5, 12.5, 25.0, 25.0]
    assert torch.allclose(est.capacity(torch.tensor([0.0, 30.0, 90.0]), 60.0, 10.0), torch.tensor([0.0, 5.0, 10.0]))


# --- the components in a model --------------------------------------------------------------


def _model(pm, variant: str, *values: str):
    return built(pm, tree={"variant": variant, "data": {"name": "digits"}, "model": {"code_dim": 4}},
                 overrides=values, seed=0, seed_before_data=True)


def _train_steps(model, data, steps: int, batch: int = 50):
    opt = torch.optim.Adam(model.model_parameters(), lr=1e-3)
    after = model.after_step_parts()
    for i in range(steps):
        x, y = data.train.take(torch.arange(i * batch, (i + 1) * batch) % len(data.train))
        loss, _, step = model.step(x, y)
        optimizer_step(model, opt, loss, step, after=after)


def test_capacity_counts_steps_or_epochs_and_resumes(aepipe_pm):
    _, model, data = _model(
        aepipe_pm, "beta-vae-capacity", "model.regularizers.capacity.anneal=10", "model.regularizers.capacity.c_max=5.0"
    )
    reg = model.regularizers["capacity"]
    assert float(reg.capacity()) == 0.0
    _train_steps(model, data, 4)
    assert float(reg.capacity()) == pytest.approx(2.0)  # 4 of 10 steps
    n = len(data.train)
    _, by_epoch, _ = _model(aepipe_pm, "beta-vae-capacity", "model.regularizers.capacity.anneal=2",
                            "model.regularizers.capacity.unit=epochs", "model.regularizers.capacity.c_max=5.0")
    _train_steps(by_epoch, data, 4)
    capacity = by_epoch.regularizers["capacity"]
    assert float(capacity.capacity()) == pytest.approx(5.0 * 200 / n / 2)  # 200 examples of n: 200 / n epochs of 2
    # the clock lives in buffers: a model rebuilt from the weights continues the schedule
    _, again, _ = _model(aepipe_pm, "beta-vae-capacity", "model.regularizers.capacity.anneal=2",
                         "model.regularizers.capacity.unit=epochs", "model.regularizers.capacity.c_max=5.0")
    again.load_state_dict(by_epoch.state_dict())
    assert float(again.regularizers["capacity"].capacity()) == float(capacity.capacity())
    # evaluation steps do not move the clock
    model.step(*data.train.head(50), training=False)
    assert float(reg.capacity()) == pytest.approx(2.0)


def test_beta_tcvae_takes_n_from_the_training_split_and_keeps_it(aepipe_pm):
    pipeline, model, data = _model(aepipe_pm, "beta-tcvae")
    reg = model.regularizers["tc-decomposition"]
    assert int(reg.dataset_size) == len(data.train) > 1000
    # rebuilt without its data (as a saved run is loaded), N comes back with the weights
    info = SimpleNamespace(
        input_dim=data.input_dim, n_classes=data.n_classes, value_range=data.value_range, image_shape=None
    )
    bare = build_model(pipeline, info)
    with pytest.raises(ConfigError, match="regularizer 'tc-decomposition' needs the training split's size"):
        bare.step(*data.train.head(8))
    bare.load_state_dict(model.state_dict())
    assert int(bare.regularizers["tc-decomposition"].dataset_size) == len(data.train)
    assert torch.isfinite(bare.step(*data.train.head(8))[0])
    _, fixed, _ = _model(aepipe_pm, "beta-tcvae", "model.regularizers.tc-decomposition.dataset_size=737")
    assert int(fixed.regularizers["tc-decomposition"].dataset_size) == 737


def test_beta_tcvae_with_unit_weights_is_the_vae(aepipe_pm):
    """alpha = beta = gamma = 1: the three terms add up to the KL (on average over draws, the
    closed form); beta weighs the TC alone."""
    _, model, data = _model(
        aepipe_pm, "beta-tcvae", "model.regularizers.tc-decomposition.beta=1.0", "model.samples=200"
    )
    with torch.no_grad():  # spread the untrained encoder's means: a KL of a few nats, not ~0
        for p in model.encoder.parameters():
            p.mul_(3.0)
    x, y = data.train.head(64)
    with torch.no_grad():
        _, terms, step = model.step(x, y, training=False)
        metrics = model.regularizers["tc-decomposition"].evaluate(step)
    assert float(terms["penalty.tc-decomposition"]) == pytest.approx(float(metrics["kl"]), rel=0.02)
    assert float(metrics["mi"] + metrics["tc"] + metrics["dimension_kl"]) == pytest.approx(
        float(metrics["kl"]), rel=0.02
    )
    reg = model.regularizers["tc-decomposition"]
    reg.config = reg.Config(beta=4.0)
    with torch.no_grad():
        torch.manual_seed(0)
        _, four, step = model.step(x, y, training=False)
        mi, tc, dkl = reg.terms(step)
    assert float(four["penalty.tc-decomposition"]) == pytest.approx(float((mi + 4 * tc + dkl).mean()), rel=1e-5)


def test_the_factor_discriminator_learns_the_total_correlation_with_its_own_optimizer(aepipe_pm):
    """Its parameters stay out of the model's optimizer; its own steps teach it to tell
    correlated codes from their permutations (TC estimate and accuracy rise), while on
    independent codes it finds nothing."""
    _, model, _ = _model(aepipe_pm, "factor-vae")
    reg = model.regularizers["tc-discriminator"]
    owned = {id(p) for p in reg.parameters()}
    assert owned and not owned & {id(p) for p in model.model_parameters()}
    assert set(reg.optimizers) == {"discriminator"}

    def trained(correlated: bool):
        torch.manual_seed(0)
        d = TCDiscriminator(TCDiscriminator.Config(hidden=[64, 64], lr=3e-3), ModelSpec(10, 4))
        d.setup(SimpleNamespace(spec=ModelSpec(10, 4)))
        for i in range(100):
            z = _posteriors(correlated, m=128, seed=i)[0][0]
            d.update(SimpleNamespace(z=z))
        with torch.no_grad():
            return {
                k: float(v)
                for k, v in d.evaluate(SimpleNamespace(z=_posteriors(correlated, m=512, seed=999)[0][0])).items()
            }

    correlated, independent = trained(True), trained(False)  # we see TC 3.5, accuracy 0.97; 0.0, 0.49
    assert correlated["tc"] > 1.0 and correlated["discriminator_accuracy"] > 0.75, correlated
    assert abs(independent["tc"]) < 0.3 and independent["discriminator_accuracy"] < 0.6, independent


def test_settings_and_misuse_are_one_line_errors(aepipe_pm):
    with pytest.raises(
        ConfigError,
        match=r"regularizer 'tc-decomposition' needs a diagonal Gaussian posterior: set \[model.bottleneck\] "
        r"name = \"gaussian\" \(bottleneck 'deterministic' gives a deterministic code\)",
    ):
        _model(aepipe_pm, "beta-tcvae", "model.bottleneck.name=deterministic")
    with pytest.raises(ConfigError, match="regularizer 'dip' type 'ii' needs a diagonal Gaussian posterior"):
        _model(aepipe_pm, "dip-vae", "model.bottleneck.name=deterministic", "model.regularizers.kl.enabled=false",
               "model.regularizers.dip.type=ii")
    with pytest.raises(ConfigError, match="tc-discriminator' needs code_dim >= 2"):
        _model(aepipe_pm, "factor-vae", "model.code_dim=1")
    with pytest.raises(ConfigError, match="unit"):
        _model(aepipe_pm, "beta-vae-capacity", "model.regularizers.capacity.unit=hours")
    _, dip, data = _model(aepipe_pm, "dip-vae")
    assert dip.regularizers["dip"].lambda_d == 100.0  # the paper's 10 x lambda_od for type i
    _, dip2, _ = _model(aepipe_pm, "dip-vae", "model.regularizers.dip.type=ii")
    assert dip2.regularizers["dip"].lambda_d == 10.0
    bare = Capacity(Capacity.Config(unit="epochs"), ModelSpec(64, 4))
    with pytest.raises(ConfigError, match="needs the training split's size"):
        bare.capacity()


# --- the claims, on held-out data -----------------------------------------------------------

SHAPES = ("vae", "dip-vae", "beta-vae-capacity")
#: one budget for every run, half the pipelines' (their 20 epochs of 10,000 images): the suite's
BUDGET = ["data.examples=5000", "train.epochs=10", "evaluate.metrics=[]"]


@pytest.fixture(scope="module")
def shapes_runs(tmp_path_factory):
    """The plain VAE, DIP-VAE and the capacity VAE on the generated 32x32 shapes, each from its
    ``-shapes`` pipeline (vae-shapes.toml's encoder and decoder) at one budget, trained once for
    the claims below."""
    return _train_all(tmp_path_factory, "disentangle", {name: (name, BUDGET) for name in SHAPES})


#: the total-correlation claims' shapes: squares without rotation (factors scale, x and y), a
#: 5-dimensional code, 50 epochs of 5,000 images; seed 0 (seeds 1 and 2 measured too, below)
SQUARES = ["data.examples=5000", "train.epochs=50", 'data.shapes=["square"]', "data.rotations=1", "model.code_dim=5",
           "evaluate.metrics=[]"]
#: beta = 20, not the paper's 6: at this budget beta = 6 beat the VAE's MIG on 3 seeds by 0.155, 0.068
#: and 0.021, too close to noise; beta = 20 by 0.39, 0.047 and 0.063 (its reconstruction pays: test
#: reconstruction loss 45-49 against the VAE's 21)
TCVAE_BETA = "model.regularizers.tc-decomposition.beta=20.0"


#: FactorVAE's claims' budget: both models at the paper's learning rate, 1e-4 (Kim & Mnih 2018),
#: for 100 epochs (6,300 steps). At the squares budget's 2e-3 the encoder outruns its
#: discriminator (learning rate 1e-4) and FactorVAE's MIG stayed at the VAE's (0.033 against 0.020)
PAPER_RATE = [*SQUARES, "train.lr=1e-4", "train.epochs=100"]


@pytest.fixture(scope="module")
def squares_runs(tmp_path_factory):
    """On squares (scale, x, y), from their ``-shapes`` pipelines: the plain VAE, beta-TCVAE and
    beta-TCVAE with beta = 1 (its KL decomposition, no penalty on the total correlation) at one
    budget; the plain VAE and FactorVAE at another (``PAPER_RATE``)."""
    return _train_all(tmp_path_factory, "squares", {
        "vae": ("vae", SQUARES), "beta-tcvae": ("beta-tcvae", [*SQUARES, TCVAE_BETA]),
        "beta-tcvae-1": ("beta-tcvae", [*SQUARES, "model.regularizers.tc-decomposition.beta=1.0"]),
        "vae-paper-rate": ("vae", PAPER_RATE), "factor-vae": ("factor-vae", PAPER_RATE)})


def _train_all(tmp_path_factory, folder: str, runs: dict[str, tuple[str, list[str]]]) -> dict:
    """Each named run trained once: ``name: (pipeline, overrides)``, the pipeline ``<pipeline>-shapes.toml``."""
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import train

    from conftest import PIPELINES, store_at

    pm = get_plugin_manager()
    with store_at(tmp_path_factory.mktemp(folder) / "mlruns"):
        return {name: train(resolve(pm, PIPELINES / f"{pipeline}-shapes.toml", [*QUIET, *sets]), pm)
                for name, (pipeline, sets) in runs.items()}


def _test_codes(result) -> np.ndarray:
    with torch.no_grad():
        return result.model.encode(result.data.test.x).code.double().numpy()


def _mig(result) -> float:
    from aepipe.evaluation.disentanglement import mig

    return mig(_test_codes(result), result.data.test.factors)


@pytest.mark.slow
def test_beta_tcvae_disentangles_better_than_the_vae(squares_runs):
    """On held-out squares, beta-TCVAE's codes have a higher mutual information gap than the
    plain VAE's at the same budget (Chen et al. 2018). We see 0.41 against 0.02 (seeds 1 and 2 of
    data and training: 0.070 against 0.023, 0.114 against 0.051). The penalty on the total
    correlation is what does it: with beta = 1 (the same estimator, no penalty) we see 0.12."""
    tcvae, vae, unpenalised = (_mig(squares_runs[name]) for name in ("beta-tcvae", "vae", "beta-tcvae-1"))
    assert tcvae > vae + 0.02, (tcvae, vae)
    assert tcvae > unpenalised + 0.1, (tcvae, unpenalised)


def _dependence(codes: np.ndarray, seed: int = 0) -> float:
    """How well a fresh classifier (15 nearest neighbours) tells codes from their dimension-wise
    permutation (the product of their marginals, as FactorVAE's discriminator sees it): trained
    on half the codes, its accuracy on the other half. 0.5: independent dimensions."""
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(seed)
    c = (codes - codes.mean(0)) / codes.std(0)

    def with_permuted(part):
        permuted = np.column_stack([rng.permutation(column) for column in part.T])
        return np.vstack([part, permuted]), np.r_[np.ones(len(part)), np.zeros(len(part))]

    half = len(c) // 2
    return float(KNeighborsClassifier(15).fit(*with_permuted(c[:half])).score(*with_permuted(c[half:])))


def test_codes_with_dependent_dimensions_are_told_from_their_permutation():
    g = np.random.default_rng(0)
    independent = g.normal(size=(1000, 4))
    shared = g.normal(size=(1000, 1)) + 0.3 * g.normal(size=(1000, 4))
    assert abs(_dependence(independent) - 0.5) < 0.06
    assert _dependence(shared) > 0.8


@pytest.mark.slow
def test_factor_vae_codes_are_closer_to_independent_than_the_vaes(squares_runs):
    """FactorVAE penalises the total correlation of its codes with a discriminator: on held-out
    squares a fresh classifier tells its codes from their permutation less well than the VAE's
    at the same budget (we see 0.63 against 0.80)."""
    factor, vae = (_dependence(_test_codes(squares_runs[name])) for name in ("factor-vae", "vae-paper-rate"))
    assert factor < vae - 0.05, (factor, vae)


@pytest.mark.slow
def test_factor_vae_disentangles_better_than_the_vae(squares_runs):
    """On held-out squares, FactorVAE reaches a higher MIG than the plain VAE at the same budget,
    both at the paper's learning rate (Kim & Mnih 2018). We see 0.104 against 0.024 (seeds 1 and
    2 of data and training: 0.141 against 0.060, 0.178 against 0.056). MIG alone varies by seed
    about as much as the penalty moves it: FactorVAE with gamma = 0 (the same model and data,
    no penalty) scores 0.083 here (0.030 and 0.142 on seeds 1 and 2, each below
    FactorVAE's own), which this test would pass; the independence test above is the one that
    fails without the penalty (gamma = 0: 0.76 against the VAE's 0.80)."""
    factor, vae = (_mig(squares_runs[name]) for name in ("factor-vae", "vae-paper-rate"))
    assert factor > vae + 0.03, (factor, vae)


@pytest.mark.slow
def test_dip_vae_codes_have_a_covariance_closer_to_the_identity(shapes_runs):
    """The off-diagonal mass sum_{i != j} C_ij^2 of the test codes' covariance, computed here
    with numpy: DIP-VAE-I's is under half the VAE's (we see 0.85 against 3.07), and its logged
    test metric is the same number."""
    def off_diagonal(result) -> float:
        cov = np.cov(_test_codes(result).T, bias=True)
        return float((cov ** 2).sum() - (np.diag(cov) ** 2).sum())

    dip, vae = off_diagonal(shapes_runs["dip-vae"]), off_diagonal(shapes_runs["vae"])
    assert dip < 0.5 * vae, (dip, vae)
    assert shapes_runs["dip-vae"].metrics["test_covariance_off_diagonal"] == pytest.approx(dip, rel=1e-3)


@pytest.mark.slow
def test_the_capacity_vaes_kl_tracks_its_schedule(shapes_runs):
    """Each epoch's validation KL follows that epoch's capacity C, which climbs by 25 / 15 nats
    an epoch: within 4 nats at every epoch and 1.5 on average while C rises to 16.7 (we see at
    most 2.9 and 1.0), and the two rise together."""
    history = shapes_runs["beta-vae-capacity"].history
    c = np.array([h["val_capacity"] for h in history])
    kl = np.array([h["val_kl"] for h in history])
    np.testing.assert_allclose(c, [min(25.0, 25.0 * e / 15) for e in range(1, len(c) + 1)], rtol=1e-4)
    gap = np.abs(kl - c)
    assert gap.max() < 4.0 and gap.mean() < 1.5, np.round(np.stack([c, kl]), 2)
    assert np.corrcoef(c, kl)[0, 1] > 0.95
