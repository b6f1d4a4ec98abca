"""Small, tested pieces of probability that variants compose: KL divergences (analytic and
Monte Carlo), importance-weighted bounds and the maximum mean discrepancy."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) = -1/2 sum (1 + logvar - mu^2 - exp(logvar)), per row."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)


LOG_2PI = math.log(2 * math.pi)


class DiagNormal:
    """q(z | x) = N(mean, diag stddev^2) over the last dimension, computed in closed form: no
    ``torch.distributions`` object (and none of its argument checks) is built per batch.
    ``rsample``, ``sample``, ``log_prob`` and ``entropy`` behave as those of
    ``Independent(Normal(mean, stddev), 1)`` and draw the same numbers under the same seed."""

    def __init__(self, mean: torch.Tensor, stddev: torch.Tensor):
        self.mean, self.stddev = mean, stddev

    def rsample(self, shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = tuple(shape) + tuple(self.mean.shape)  # torch.randn: the numbers of empty().normal_(), one operation
        return self.mean + torch.randn(shape, dtype=self.mean.dtype, device=self.mean.device) * self.stddev

    def sample(self, shape: tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z), summed over the code: shape ``z.shape[:-1]``."""
        return (-0.5 * ((z - self.mean) / self.stddev).pow(2) - self.stddev.log() - 0.5 * LOG_2PI).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.stddev.log() + 0.5 * (1 + LOG_2PI)).sum(-1)

    def kl_to_normal(self, loc: torch.Tensor | float, scale: torch.Tensor | float) -> torch.Tensor:
        """KL(q || N(loc, diag scale^2)) per row, in closed form. ``loc`` and ``scale`` may be
        numbers: ``0.0`` and ``1.0`` (a standard normal) skip the shift and the division (four
        operations, and their gradients, per step)."""
        unit = isinstance(scale, (int, float)) and scale == 1
        centred = isinstance(loc, (int, float)) and loc == 0
        ratio = (self.stddev if unit else self.stddev / scale).pow(2)
        shifted = self.mean if centred else self.mean - loc
        t1 = (shifted if unit else shifted / scale).pow(2)
        return 0.5 * (ratio + t1 - 1 - ratio.log()).sum(-1)


def kl_analytic(q: Any, p: Distribution) -> torch.Tensor | None:
    """KL(q || p) in closed form where one is known (e.g. Gaussian to Gaussian), else None."""
    if isinstance(q, DiagNormal):
        base = getattr(p, "base_dist", None)
        if isinstance(p, Independent) and isinstance(base, Normal) and p.reinterpreted_batch_ndims == 1:
            return q.kl_to_normal(base.loc, base.scale)
        return None
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


#: a code unit this close to 0 counts as inactive in :func:`code_statistics`
NEAR_ZERO = 0.05


@torch.no_grad()
def code_statistics(
    model: Any, x: Any, y: torch.Tensor | None = None, prefix: str = "", batch: int = 2048
) -> dict[str, float]:
    """Mean activation and share of near-zero units (|h| < 0.05) of the deterministic code
    (the posterior mean for stochastic codes), over a split (or tensors ``x`` and ``y``).
    One read-back."""
    from aepipe.data import batches

    was = model.training
    model.eval()
    total, n = None, 0
    for xb, yb in batches(x, y, batch):
        code = model.encode(xb, yb).code
        part = torch.stack([code.mean(1).sum(), (code.abs() < NEAR_ZERO).float().mean(1).sum()])
        total, n = part if total is None else total + part, n + xb.shape[0]
    model.train(was)
    mean, share = (total / n).tolist()
    return {f"{prefix}mean_activation": mean, f"{prefix}near_zero_share": share}
