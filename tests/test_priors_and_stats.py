"""Priors (sampling and log densities against references) and the probability pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from torch.distributions import Independent, Normal

from aepipe.components import ModelSpec
from aepipe.errors import ConfigError
from aepipe.stats import importance_weighted_bound, kl_analytic, kl_monte_carlo, kl_standard_normal, mmd_rbf
from aepipe_plugins.priors.distributions import GaussianMixture, StandardNormal, SwissRoll


def test_standard_normal_moments_and_density():
    torch.manual_seed(0)
    prior = StandardNormal(StandardNormal.Config(), ModelSpec(10, 3))
    z = prior.sample(200_000)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=0.01)
    assert torch.allclose(torch.cov(z.T), torch.eye(3), atol=0.01)
    pts = torch.randn(5, 3)
    ref = multivariate_normal(np.zeros(3), np.eye(3)).logpdf(pts.numpy())
    assert np.allclose(prior.log_prob(pts).numpy(), ref, atol=1e-5)


def test_ring_mixture_moments_and_density():
    torch.manual_seed(0)
    cfg = GaussianMixture.Config(components=10, preset="ring", radius=4.0, std=0.5)
    prior = GaussianMixture(cfg, ModelSpec(10, 2))
    means = prior.means.numpy()
    assert np.allclose(np.linalg.norm(means, axis=1), 4.0) and np.allclose(means[0], [4.0, 0.0])
    z = prior.sample(200_000)
    # mixture moments: mean of the means; covariance = std^2 I + covariance of the means
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=0.03)
    expected_cov = 0.25 * np.eye(2) + np.cov(means.T, bias=True)
    assert np.allclose(torch.cov(z.T).numpy(), expected_cov, atol=0.05)
    pts = torch.randn(6, 2) * 3
    ref = logsumexp([multivariate_normal(m, 0.25 * np.eye(2)).logpdf(pts.numpy()) for m in means], axis=0) - math.log(
        10
    )
    assert np.allclose(prior.log_prob(pts).numpy(), ref, atol=1e-4)


def test_class_conditional_mixture_draws_the_requested_component():
    torch.manual_seed(0)
    cfg = GaussianMixture.Config(components=10, class_conditional=True, std=0.1)
    prior = GaussianMixture(cfg, ModelSpec(10, 2, n_classes=10))
    y = torch.arange(10).repeat(500)
    z = prior.sample(len(y), y)
    assert (torch.cdist(z, prior.means).argmin(1) == y).all()
    ref = multivariate_normal(prior.means[3].numpy(), 0.01 * np.eye(2)).logpdf(z[:1].numpy())
    assert float(prior.log_prob(z[:1], torch.tensor([3]))) == pytest.approx(float(ref), rel=1e-6)
    with pytest.raises(ConfigError, match="one component per class: 5 classes, 10 components"):
        GaussianMixture(cfg, ModelSpec(10, 2, n_classes=5))


def test_explicit_and_random_means():
    prior = GaussianMixture(GaussianMixture.Config(components=2, means=[[0, 1, 2], [3, 4, 5]]), ModelSpec(4, 3))
    assert prior.means.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ConfigError, match="means must be 2 lists of 3 numbers"):
        GaussianMixture(GaussianMixture.Config(components=2, means=[[0, 1]]), ModelSpec(4, 3))
    a = GaussianMixture(GaussianMixture.Config(preset="random", seed=1), ModelSpec(4, 5)).means
    b = GaussianMixture(GaussianMixture.Config(preset="random", seed=1), ModelSpec(4, 5)).means
    assert torch.equal(a, b) and a.shape == (10, 5)


def test_swiss_roll_samples_lie_on_the_roll():
    torch.manual_seed(0)
    cfg = SwissRoll.Config(noise=0.0)
    prior = SwissRoll(cfg, ModelSpec(10, 2, n_classes=4))
    z = prior.sample(5000)
    radius = z.norm(dim=1) / cfg.scale  # = t for a noiseless roll
    assert float(radius.min()) >= cfg.t_min - 1e-4 and float(radius.max()) <= cfg.t_max + 1e-4
    angle = torch.atan2(z[:, 1], z[:, 0])
    assert torch.allclose(torch.cos(angle), torch.cos(radius), atol=1e-3)
    assert not prior.has_log_prob
    with pytest.raises(NotImplementedError):
        prior.log_prob(z)
    conditional = SwissRoll(SwissRoll.Config(noise=0.0, class_conditional=True), ModelSpec(10, 2, n_classes=4))
    t = conditional.sample(400, torch.full((400,), 3)).norm(dim=1) / cfg.scale
    assert float(t.min()) >= cfg.t_min + 0.75 * (cfg.t_max - cfg.t_min) - 1e-3


def test_analytic_kl_matches_its_monte_carlo_estimate():
    torch.manual_seed(0)
    mu, std = torch.randn(4, 3), torch.rand(4, 3) + 0.3
    q = Independent(Normal(mu, std), 1)
    for p in (
        Independent(Normal(torch.zeros(3), torch.ones(3)), 1),
        Independent(Normal(torch.randn(3), torch.rand(3) + 0.5), 1),
    ):
        exact = kl_analytic(q, p)
        z = q.sample((200_000,))
        estimate = kl_monte_carlo(q.log_prob(z), p.log_prob(z))
        stderr = (q.log_prob(z) - p.log_prob(z)).std(0) / math.sqrt(200_000)
        assert (estimate - exact).abs().le(4 * stderr).all(), (estimate, exact, stderr)
    # the textbook formula for a standard normal prior
    logvar = 2 * std.log()
    assert torch.allclose(
        kl_standard_normal(mu, logvar), kl_analytic(q, Independent(Normal(torch.zeros(3), torch.ones(3)), 1)), atol=1e-5
    )


def test_importance_weighted_bound_tightens_with_k():
    # a 1-D model with a known marginal: z ~ N(0,1), x|z ~ N(z, 1) => x ~ N(0, 2); q deliberately off
    torch.manual_seed(0)
    x = torch.tensor([0.7])
    q = Normal(torch.tensor([-0.6]), torch.tensor([1.3]))  # off-centre and wide: the posterior is N(0.35, 0.71)
    truth = float(Normal(0.0, math.sqrt(2.0)).log_prob(x))
    bounds = []
    for k in (1, 10, 1000):
        vals = []
        for _ in range(200):
            z = q.sample((k,))
            vals.append(
                importance_weighted_bound(Normal(z, 1.0).log_prob(x), Normal(0.0, 1.0).log_prob(z), q.log_prob(z))
            )
        bounds.append(float(torch.stack(vals).mean()))
    assert bounds[0] < bounds[1] < bounds[2] <= truth + 1e-3
    assert abs(bounds[2] - truth) < 0.01


def test_mmd_separates_distributions():
    torch.manual_seed(0)
    a, b = torch.randn(500, 2), torch.randn(500, 2)
    c = torch.randn(500, 2) * 2 + 1
    assert abs(float(mmd_rbf(a, b))) < 0.01
    assert float(mmd_rbf(a, c)) > 0.1
