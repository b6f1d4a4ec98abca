"""Divergences between two samples of codes, written once and shared by the regularizers: the
maximum mean discrepancy with the RBF or inverse multiquadric kernel at the WAE paper's scale,
and the sliced Wasserstein distance.

Conventions (Tolstikhin et al. 2018, section 4 and their code): for codes of dimension d and a
prior of variance sigma^2 per coordinate the kernel scale is C = 2 d sigma^2;
``imq``: k(x, y) = C / (C + ||x - y||^2); ``rbf``: k(x, y) = exp(-||x - y||^2 / C). With several
``scales`` the kernel is the sum over s of the kernel at scale s * C. The MMD is the unbiased
U-statistic (the diagonal terms k(x_i, x_i) are left out), so it can be slightly negative when
both samples come from one distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

KERNELS = ("rbf", "imq")


def kernel_scale(code_dim: int, prior_variance: float = 1.0) -> float:
    """C = 2 d sigma^2, the kernel scale of Tolstikhin et al. for d-dimensional codes."""
    return 2.0 * code_dim * prior_variance


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str, scale: float,
                  scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """k(a_i, b_j) for every pair, shape ``(n, m)``: ``kernel`` is ``rbf`` or ``imq``, summed
    over the multipliers ``scales`` of the base scale ``scale`` (C)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    sq = torch.cdist(a, b).pow(2)
    total = torch.zeros_like(sq)
    for s in scales:
        c = s * scale
        total = total + (torch.exp(-sq / c) if kernel == "rbf" else c / (c + sq))
    return total


def mmd(a: torch.Tensor, b: torch.Tensor, kernel: str = "imq", scale: float | None = None,
        scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Unbiased squared MMD between samples ``a`` (n, d) and ``b`` (m, d), n, m >= 2:
    mean_{i != j} k(a_i, a_j) + mean_{i != j} k(b_i, b_j) - 2 mean_{i, j} k(a_i, b_j).
    ``scale`` defaults to :func:`kernel_scale` of the codes' width (a unit-variance prior)."""
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples on each side, got {n} and {m}")
    scale = kernel_scale(a.shape[-1]) if scale is None else scale
    b = b.to(a.dtype)
    kaa = kernel_matrix(a, a, kernel, scale, scales)
    kbb = kernel_matrix(b, b, kernel, scale, scales)
    kab = kernel_matrix(a, b, kernel, scale, scales)
    term_a = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    term_b = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return term_a + term_b - 2 * kab.mean()


def random_directions(dim: int, projections: int, like: torch.Tensor) -> torch.Tensor:
    """``projections`` directions drawn uniformly on the unit sphere of R^dim, as columns
    ``(dim, projections)``, on ``like``'s device and dtype."""
    theta = torch.randn(dim, projections, device=like.device, dtype=like.dtype)
    return theta / theta.norm(dim=0, keepdim=True)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 50, p: float = 2.0,
                       directions: torch.Tensor | None = None) -> torch.Tensor:
    """SW_p^p between equally many samples ``a`` and ``b`` (n, d), Kolouri et al.'s estimate:
    project both on random unit directions, and in each direction the optimal transport in one
    dimension pairs the sorted projections; the mean over samples and directions of
    |sorted a - sorted b|^p. ``directions`` ``(d, L)`` replaces the random ones."""
    if a.shape != b.shape:
        raise ValueError(f"the sliced Wasserstein estimate pairs equally many samples; got shapes {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    b = b.to(a.dtype)
    theta = random_directions(a.shape[-1], projections, a) if directions is None else directions.to(a)
    pa = torch.sort(a @ theta, dim=0).values
    pb = torch.sort(b @ theta, dim=0).values
    return (pa - pb).abs().pow(p).mean()
