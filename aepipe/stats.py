"""Small, tested pieces of probability that variants compose: KL divergences (analytic and
Monte Carlo), importance-weighted bounds and the maximum mean discrepancy."""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, kl_divergence


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) = -1/2 sum (1 + logvar - mu^2 - exp(logvar)), per row."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)


def kl_analytic(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q || p) in closed form where torch knows one (e.g. Gaussian to Gaussian), else None."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def kl_monte_carlo(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """The Monte Carlo estimate mean_l [log q(z_l | x) - log p(z_l)], from ``(L, n)`` log
    densities of L samples z_l ~ q; shape ``(n,)``."""
    return (log_q - log_p).mean(0)


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


def importance_weighted_bound(log_px_z: torch.Tensor, log_pz: torch.Tensor, log_qz: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x) from ``(K, n)`` terms: a lower bound of
    log p(x) that tightens as K grows (Burda et al.); K = 1 gives the ELBO's estimate."""
    return log_mean_exp(log_px_z + log_pz - log_qz, 0)


def mmd_rbf(a: torch.Tensor, b: torch.Tensor, scales: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)) -> torch.Tensor:
    """Unbiased squared maximum mean discrepancy between samples ``a`` (n, d) and ``b`` (m, d)
    with a sum of Gaussian kernels whose bandwidths are ``scales`` times the median distance of
    the pooled sample. Near 0 when both come from one distribution."""
    pooled = torch.cat([a, b])
    dist = torch.cdist(pooled, pooled).pow(2)
    n = a.shape[0]
    median = dist[dist > 0].median().clamp_min(1e-12)
    kernel = sum(torch.exp(-dist / (2 * s * s * median)) for s in scales)
    kaa, kbb, kab = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    m = b.shape[0]
    term_a = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    term_b = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return term_a + term_b - 2 * kab.mean()
