"""The estimators the disentangling regularizers compose: the minibatch-weighted decomposition of
the KL (Chen et al. 2018), dimension-wise permutation (Kim & Mnih 2018), the covariance penalties
of DIP-VAE (Kumar et al. 2018) and the capacity schedule (Burgess et al. 2018). Closed forms on
tensors, no distribution objects per batch; each is tested on its own."""

from __future__ import annotations

import math

import torch

from aepipe.plugin import LOG_2PI


def log_density_matrix(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(z_k,d | mean_j,d, std_j,d^2) of every draw k under every posterior j, dimension by
    dimension: ``z`` (K, D), ``mean`` and ``std`` (M, D) -> (K, M, D)."""
    scaled = (z.unsqueeze(1) - mean.unsqueeze(0)) / std.unsqueeze(0)
    return -0.5 * scaled.pow(2) - std.log().unsqueeze(0) - 0.5 * LOG_2PI


def kl_decomposition(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, log_pz: torch.Tensor,
                     dataset_size: int, stratified: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three terms of E_x KL(q(z | x) || p(z)) = index-code MI + total correlation +
    dimension-wise KL (Chen et al. 2018, eq. 2), per draw, from the M posteriors q(z | x_j) of a
    batch of a dataset of N examples. Minibatch-weighted sampling (the default) weighs every
    posterior 1 / (N M):

    - log q(z) ~ logsumexp_j log q(z | x_j) - log(N M)
    - log prod_d q(z_d) ~ sum_d [logsumexp_j log q(z_d | x_j) - log(N M)]

    Its gradients are those of the terms, but its values are not: where each code's own
    posterior dominates the joint sum and many overlap in each dimension, the TC comes out about
    D log N - log M too high (and the dimension-wise KL as much too low). ``stratified``
    (minibatch stratified sampling) weighs the draw's own posterior 1 / N and the others
    (N - 1) / (N (M - 1)): with N = M that is the batch's exact aggregate posterior.

    ``z`` (L, M, D): L draws of each of the M posteriors N(``mean``, diag ``std``^2), (M, D);
    ``log_pz`` (L, M): log p(z) of each draw. Returns ``(mi, tc, dimension_kl)``, each (L, M):
    log q(z | x) - log q(z), log q(z) - log prod_d q(z_d) and log prod_d q(z_d) - log p(z), whose
    sum is the one-draw Monte Carlo estimate of the KL."""
    draws, m, d = z.shape
    flat = z.reshape(draws * m, d)
    matrix = log_density_matrix(flat, mean, std)  # (L M, M, D)
    own = matrix.reshape(draws, m, m, d).diagonal(dim1=1, dim2=2).sum(1)  # row l*M + i under posterior i: (L, M)
    if stratified and m > 1:
        n = max(dataset_size, m)
        weights = torch.full((m, m), math.log((n - 1) / (n * (m - 1))), dtype=z.dtype, device=z.device)
        weights.fill_diagonal_(-math.log(n))
        weights = weights.repeat(draws, 1).unsqueeze(-1)  # (L M, M, 1): row l*M + i, posterior j
    else:
        weights = torch.full((1, 1, 1), -math.log(dataset_size * m), dtype=z.dtype, device=z.device)
    log_qz = torch.logsumexp(matrix.sum(-1, keepdim=True) + weights, dim=1).reshape(draws, m)
    log_marginals = torch.logsumexp(matrix + weights, dim=1).sum(-1).reshape(draws, m)
    return own - log_qz, log_qz - log_marginals, log_marginals - log_pz


def total_correlation(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dataset_size: int,
                      stratified: bool = False) -> torch.Tensor:
    """The estimate of TC(q(z)) = KL(q(z) || prod_d q(z_d)) from draws ``z`` (L, M, D) of the M
    posteriors N(``mean``, diag ``std``^2) (see :func:`kl_decomposition`): a scalar, the mean
    over draws."""
    log_pz = torch.zeros(z.shape[:2], dtype=z.dtype, device=z.device)  # cancels: not part of the TC
    return kl_decomposition(z, mean, std, log_pz, dataset_size, stratified)[1].mean()


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each column of ``z`` (n, D) shuffled by its own random permutation of the rows (Kim & Mnih
    2018, Algorithm 1): every marginal q(z_d) is kept, the dependencies between dimensions are
    broken, so the rows are draws of prod_d q(z_d)."""
    n, d = z.shape
    keys = torch.rand(n, d, generator=generator, device=z.device if generator is None else generator.device)
    order = keys.argsort(dim=0).to(z.device)
    return torch.gather(z, 0, order)


def covariance(x: torch.Tensor) -> torch.Tensor:
    """The (biased) covariance of rows ``x`` (n, D): E[x x^T] - E[x] E[x]^T, (D, D)."""
    centered = x - x.mean(0, keepdim=True)
    return centered.T @ centered / x.shape[0]


def dip_covariance(mean: torch.Tensor, std: torch.Tensor | None, kind: str) -> torch.Tensor:
    """The covariance DIP-VAE pushes to the identity: type ``i`` that of the encoder's mean,
    Cov_p(x)[mu(x)]; type ``ii`` that of the aggregate posterior q(z),
    E_p(x)[diag sigma^2(x)] + Cov_p(x)[mu(x)] (Kumar et al. 2018, eqs. 8-9)."""
    cov = covariance(mean)
    if kind == "ii":
        assert std is not None, "DIP-VAE-II needs the posterior's standard deviation"
        cov = cov + torch.diag_embed(std.pow(2).mean(0))
    return cov


def off_diagonal_mass(cov: torch.Tensor) -> torch.Tensor:
    """sum_{i != j} cov_ij^2: how far a covariance is from diagonal."""
    return cov.pow(2).sum() - cov.diagonal().pow(2).sum()


def diagonal_gap(cov: torch.Tensor) -> torch.Tensor:
    """sum_i (cov_ii - 1)^2: how far a covariance's variances are from 1."""
    return (cov.diagonal() - 1).pow(2).sum()


def capacity(progress: float | torch.Tensor, anneal: float, c_max: float) -> float | torch.Tensor:
    """C of the capacity schedule (Burgess et al. 2018): 0 at progress 0, rising linearly to
    ``c_max`` at progress ``anneal`` (steps or epochs), then held there."""
    if isinstance(progress, torch.Tensor):
        return c_max * (progress / anneal).clamp(0.0, 1.0)
    return c_max * min(1.0, max(0.0, progress / anneal))
