"""Reconstruction losses other than the likelihood's: log-cosh and 1 - MS-SSIM.

A model's reconstruction term is its likelihood's negative log-likelihood (``model.likelihood``:
Bernoulli or Gaussian), chosen by ``[model] likelihood``. These losses enter as regularizers
that *replace* that term (``replace_likelihood = true``, the default): the penalty is the new
loss less the likelihood's NLL of the same reconstructions, so the run's loss is exactly the new
loss plus the other terms (the KL...), and ``recon`` stays logged as the likelihood's NLL, for
comparison with other models. ``replace_likelihood = false`` adds the loss to the likelihood's
term instead. With ``warmup_epochs`` the loss moves from the likelihood's term to the new one.

The reconstruction they score is the likelihood's mean of the decoder's output (a sigmoid for
``bernoulli``), as ``aepipe reconstruct`` gives it, against the clean inputs in [0, 1].
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator

from aepipe.plugin import ComponentConfig, ConfigError, ModelSpec, Regularizer

#: the five scales' exponents of Wang, Simoncelli and Bovik (2003), finest first
MSSSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


class ReconstructionLossConfig(ComponentConfig):
    """``weight``: scale of the loss (per example, summed over the inputs' values as a
    likelihood's NLL is); ``replace_likelihood``: the loss replaces the likelihood's term
    (true) or is added to it (false)."""

    weight: float = Field(1.0, ge=0.0)
    replace_likelihood: bool = True


class ReconstructionLoss(Regularizer):
    """A reconstruction loss that replaces (or adds to) the likelihood's term: subclasses give
    :meth:`loss`, per example."""

    Config = ReconstructionLossConfig
    weight_setting = "weight"

    def loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The loss of reconstructions ``recon`` of ``x`` (both ``(n, d)`` in [0, 1]), shape ``(n,)``."""
        raise NotImplementedError

    def _pair(self, step) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's reconstructions (every draw of z) and the clean inputs repeated to match."""
        samples = step.output.shape[0] // step.x.shape[0]
        target = step.x.repeat(samples, 1) if samples > 1 else step.x
        return step.model.likelihood.mean(step.output), target

    def penalty(self, step) -> torch.Tensor:
        recon, target = self._pair(step)
        value = self.config.weight * self.loss(recon, target).mean()
        if self.config.replace_likelihood:  # the step's own `recon` term cancels: the loss is ours
            value = value - step.model.likelihood.nll(step.output, target).mean()
        return value


# --- log-cosh -----------------------------------------------------------------------------


def log_cosh(t: torch.Tensor, a: float) -> torch.Tensor:
    """(1 / a) log cosh(a t), elementwise, computed without overflow as
    (|u| + softplus(-2 |u|) - log 2) / a with u = a t: about a t^2 / 2 near 0 and
    |t| - log(2) / a far from it."""
    u = (a * t).abs()
    return (u + F.softplus(-2.0 * u) - math.log(2.0)) / a


class LogCoshConfig(ReconstructionLossConfig):
    """``a``: the scale of log-cosh (PyTorch-VAE's ``alpha``, default 10): the loss is quadratic
    for errors below about 1 / a and linear above; ``weight``, ``replace_likelihood``: as every
    reconstruction loss."""

    a: float = Field(10.0, gt=0.0)


class LogCosh(ReconstructionLoss):
    """Log-cosh reconstruction loss, sum over inputs of (1 / a) log cosh(a (x^ - x)) (PyTorch-VAE's LogCosh VAE)."""

    name = "logcosh"
    Config = LogCoshConfig

    def loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return log_cosh(recon - x, self.config.a).sum(-1)

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        """``logcosh``: the loss per example, unweighted."""
        recon, target = self._pair(step)
        return {"logcosh": self.loss(recon, target).mean()}


# --- MS-SSIM --------------------------------------------------------------------------------


class MSSSIMConfig(ReconstructionLossConfig):
    """``weight``: the loss is weight x D x (1 - MS-SSIM) per image, D its number of values, so
    that it sums over pixels like a likelihood's NLL (PyTorch-VAE weighs 1 - MS-SSIM against a
    KL scaled down by a similar factor); ``kernel_size`` (odd) and ``sigma``: the Gaussian
    window (default: the largest odd size <= 11 and <= side / 4 + 1, so 3 on 8x8 digits, 7 on
    28x28 MNIST, 11 from 40 pixels up; sigma = 1.5 x kernel_size / 11, the standard's ratio);
    ``scales``: how many (default: as many as fit, at most the standard's 5: 2 on 8x8, 3 on
    28x28); the exponents are the standard's finest ones, rescaled to sum to 1; ``normalize``:
    torchmetrics' ``relu`` (the default) or ``simple`` clipping of each scale's terms, which
    keeps the gradient finite in training."""

    kernel_size: Optional[PositiveInt] = None
    sigma: Optional[float] = Field(None, gt=0.0)
    scales: Optional[int] = Field(None, ge=1, le=5)
    normalize: Literal["relu", "simple"] = "relu"

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: Optional[int]) -> Optional[int]:
        if value is not None and value % 2 == 0:
            raise ValueError("must be odd")
        return value


def image_chw(image_shape: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """(channels, height, width) of a model's ``spec.image_shape`` ((C, H, W) or (H, W))."""
    if not image_shape:
        return None
    return (1, *image_shape) if len(image_shape) == 2 else tuple(image_shape)  # type: ignore[return-value]


def msssim_window(side: int, kernel_size: int | None = None, sigma: float | None = None,
                  scales: int | None = None) -> tuple[int, float, int]:
    """``(kernel_size, sigma, scales)`` for square-ish images whose smaller side is ``side``:
    defaults as :class:`MSSSIMConfig` states; raises ConfigError where torchmetrics could not
    compute it (side >= 2 ** scales; side // max(1, scales - 1) ** 2 > kernel_size - 1; the
    window's half-width below the coarsest scale's side)."""
    if kernel_size is None:
        kernel_size = max(1, min(11, side // 4 + 1))
        kernel_size -= 1 - kernel_size % 2  # odd
    if sigma is None:
        sigma = 1.5 * kernel_size / 11
    window = int(3.5 * sigma + 0.5) * 2 + 1  # the Gaussian window torchmetrics builds from sigma

    def fits(s: int) -> bool:
        coarsest = side // 2 ** (s - 1)
        return (side >= 2 ** s and side // max(1, s - 1) ** 2 > kernel_size - 1
                and (window - 1) // 2 < coarsest and side > window - 1)

    if scales is None:
        scales = next((s for s in range(len(MSSSIM_BETAS), 0, -1) if fits(s)), 0)
        if not scales:
            raise ConfigError(
                f"msssim: a {kernel_size}-wide window (sigma {sigma:.3g}) does not fit {side}-pixel images; "
                "set a smaller kernel_size or sigma"
            )
    elif not fits(scales):
        raise ConfigError(f"msssim: {scales} scales with a {kernel_size}-wide window (sigma {sigma:.3g}) do not fit "
                          f"{side}-pixel images; set fewer scales or a smaller kernel_size")
    return kernel_size, sigma, scales


def msssim_betas(scales: int) -> tuple[float, ...]:
    """The exponents of the ``scales`` finest standard scales, rescaled to sum to 1."""
    kept = MSSSIM_BETAS[:scales]
    return tuple(b / sum(kept) for b in kept)


def ms_ssim(recon: torch.Tensor, x: torch.Tensor, chw: tuple[int, int, int], kernel_size: int, sigma: float,
            scales: int, normalize: str = "relu") -> torch.Tensor:
    """MS-SSIM of each image (torchmetrics' differentiable functional, data range 1): ``(n,)``."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    return multiscale_structural_similarity_index_measure(
        recon.reshape(-1, *chw), x.reshape(-1, *chw), kernel_size=kernel_size, sigma=sigma, data_range=1.0,
        betas=msssim_betas(scales), normalize=normalize, reduction="none")


class MSSSIM(ReconstructionLoss):
    """1 - MS-SSIM as the reconstruction loss (Wang et al. 2003; PyTorch-VAE's MSSIM VAE), for images."""

    name = "msssim"
    Config = MSSSIMConfig

    def __init__(self, config: MSSSIMConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.chw = image_chw(spec.image_shape)
        self.window: tuple[int, float, int] | None = None
        if self.chw is not None:
            self.window = msssim_window(min(self.chw[1:]), config.kernel_size, config.sigma, config.scales)

    def setup(self, model) -> None:
        if self.chw is None:
            raise ConfigError("regularizer 'msssim' needs images; the dataset gives flat vectors (set its image_shape)")

    def similarity(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """MS-SSIM of each reconstruction, ``(n,)``."""
        assert self.chw is not None and self.window is not None
        return ms_ssim(recon, x, self.chw, *self.window, normalize=self.config.normalize)

    def loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x.shape[-1] * (1.0 - self.similarity(recon, x))

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        """``msssim``: the mean MS-SSIM of the reconstructions."""
        recon, target = self._pair(step)
        return {"msssim": self.similarity(recon, target).mean()}
