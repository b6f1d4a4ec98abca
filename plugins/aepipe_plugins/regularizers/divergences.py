"""The regularizers the divergence variants compose: ``prior-mmd`` (InfoVAE, WAE-MMD),
``sliced-wasserstein`` (SWAE), ``code-l2`` and ``decoder-gradient`` (RAE). Each penalty is
already weighted by its own setting; each logs its unweighted value as a validation and test
metric (``val_mmd``, ``val_sliced_wasserstein``, ``val_code_sq_norm``, ``val_decoder_gradient_sq``)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat

from aepipe.plugin import ComponentConfig, ConfigError, Regularizer, mmd_rbf
from aepipe_plugins.regularizers.kernels import kernel_scale, mmd, sliced_wasserstein

#: the seed of the prior samples that validation and test metrics compare codes against
EVAL_SEED = 0


def prior_draws(step, rows: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """As many prior samples as ``rows`` has rows (labels repeated for a class-conditional
    prior), in ``rows``' dtype; with ``seed``, the same draws every time (the caller's random
    state is left as it was)."""
    prior = step.model.prior
    y = None
    if prior.class_conditional and step.y is not None:
        y = step.y.repeat(rows.shape[0] // step.y.shape[0])
    if seed is None:
        return prior.sample(rows.shape[0], y).to(rows.dtype)
    devices = [rows.device] if rows.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return prior.sample(rows.shape[0], y).to(rows.dtype)


def _needs_prior(name: str, model) -> None:
    if model.prior is None:
        raise ConfigError(
            f"regularizer '{name}' matches the codes to a prior: set [model.prior] name = ... (e.g. standard-normal)"
        )


class PriorMMDConfig(ComponentConfig):
    """``lam``: weight of the MMD penalty, >= 0 (WAE-MMD: 10, Tolstikhin et al.'s MNIST
    setting; InfoVAE: alpha + lambda - 1); ``kernel``: ``imq`` (inverse multiquadric, the WAE
    paper's choice) or ``rbf``; ``prior_variance``: sigma^2 of the kernel scale
    C = 2 * code_dim * sigma^2; ``scales``: multipliers of C, the kernel summed over them."""

    lam: float = Field(10.0, ge=0.0, description="weight of the MMD penalty")
    kernel: Literal["imq", "rbf"] = Field("imq", description="imq: C / (C + |x - y|^2); rbf: exp(-|x - y|^2 / C)")
    prior_variance: PositiveFloat = Field(1.0, description="sigma^2 in the kernel scale C = 2 * code_dim * sigma^2")
    scales: list[PositiveFloat] = Field(
        [1.0], min_length=1, description="multipliers of C; the kernel is summed over them"
    )


class PriorMMD(Regularizer):
    """lam * MMD^2(q(z), p(z)): the unbiased MMD between the batch's codes (the draws the
    decoder sees, for a stochastic code) and as many prior samples."""

    name = "prior-mmd"
    Config = PriorMMDConfig
    weight_setting = "lam"

    def setup(self, model) -> None:
        _needs_prior(self.name, model)

    def divergence(self, z: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        c = self.config
        return mmd(z, prior, c.kernel, kernel_scale(z.shape[-1], c.prior_variance), c.scales)

    def penalty(self, step) -> torch.Tensor:
        return self.config.lam * self.divergence(step.z, prior_draws(step, step.z))

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        """``mmd``: the penalty's MMD, unweighted, against fixed prior draws; ``prior_mmd``:
        the codes against the prior by :func:`aepipe.stats.mmd_rbf`, the yardstick the AAE logs too."""
        return {"mmd": self.divergence(step.z, prior_draws(step, step.z, EVAL_SEED)),
                "prior_mmd": mmd_rbf(step.encoding.code, prior_draws(step, step.encoding.code, EVAL_SEED))}


class SlicedWassersteinConfig(ComponentConfig):
    """``lam``: weight of the penalty, >= 0; ``projections``: L, random directions per batch
    (Kolouri et al. use 50); ``p``: the Wasserstein order (SW_p^p is the penalty)."""

    lam: float = Field(10.0, ge=0.0, description="weight of the sliced Wasserstein penalty")
    projections: int = Field(50, ge=1, le=100_000, description="random directions drawn per batch")
    p: float = Field(2.0, ge=1.0, description="order of the Wasserstein distance")


class SlicedWasserstein(Regularizer):
    """lam * SW_p^p(q(z), p(z)): the codes and as many prior samples projected on L random
    directions, the one-dimensional transport of each by sorting (Kolouri et al. 2019)."""

    name = "sliced-wasserstein"
    Config = SlicedWassersteinConfig
    weight_setting = "lam"

    def setup(self, model) -> None:
        _needs_prior(self.name, model)

    def penalty(self, step) -> torch.Tensor:
        c = self.config
        return c.lam * sliced_wasserstein(step.z, prior_draws(step, step.z), c.projections, c.p)

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        """``sliced_wasserstein``: unweighted, against fixed prior draws and directions; ``prior_mmd`` as the AAE's."""
        c = self.config
        devices = [step.z.device] if step.z.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(EVAL_SEED)
            sw = sliced_wasserstein(step.z, prior_draws(step, step.z), c.projections, c.p)
        return {"sliced_wasserstein": sw,
                "prior_mmd": mmd_rbf(step.encoding.code, prior_draws(step, step.encoding.code, EVAL_SEED))}


class CodeL2Config(ComponentConfig):
    """``beta``: weight of ||z||^2 / 2, >= 0 (1e-4, Pythae's default for the RAE)."""

    beta: float = Field(1e-4, ge=0.0, description="weight of the code's squared norm / 2")


class CodeL2(Regularizer):
    """beta * ||z||^2 / 2, averaged over the batch: bounds a deterministic code's scale (the
    RAE's L_z, Ghosh et al. 2020)."""

    name = "code-l2"
    Config = CodeL2Config
    weight_setting = "beta"

    def penalty(self, step) -> torch.Tensor:
        return self.config.beta * 0.5 * step.z.pow(2).sum(-1).mean()

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        return {"code_sq_norm": step.encoding.code.pow(2).sum(-1).mean()}


def decoder_gradient_sq(model, z: torch.Tensor, y_onehot: torch.Tensor | None = None, norm: str = "summed",
                        output: torch.Tensor | None = None) -> torch.Tensor:
    """The squared norm of the decoder's gradient with respect to its input z, per row, of the
    reconstruction D(z) (the likelihood's mean, e.g. sigmoid(logits) for a Bernoulli decoder).

    ``summed``: ||grad_z sum_j D_j(z)||^2, what Ghosh et al.'s code computes; ``frobenius``:
    ||dD/dz||_F^2, the whole Jacobian, column by column (J e_k, by the double-backward trick:
    two backward passes per code dimension). ``output``, the decoder's output for ``z`` already
    in the graph (a training step's), is reused. The result keeps the graph: its gradient
    reaches the decoder and the encoder. Rows are taken to be independent (no batch norm)."""
    if norm not in ("summed", "frobenius"):
        raise ValueError(f"unknown norm {norm!r}; expected summed or frobenius")
    with torch.enable_grad():
        if output is None or not z.requires_grad:
            z = z.detach().requires_grad_(True)
            output = model.decoder(z, y_onehot)
        mean = model.likelihood.mean(output)
        if norm == "summed":
            (grad,) = torch.autograd.grad(mean.sum(), z, create_graph=True)
            return grad.pow(2).sum(-1)
        u = torch.zeros_like(mean, requires_grad=True)
        (jt_u,) = torch.autograd.grad(mean, z, grad_outputs=u, create_graph=True)  # J^T u per row, linear in u
        total = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for k in range(z.shape[1]):
            e_k = torch.zeros_like(z)
            e_k[:, k] = 1.0
            (column,) = torch.autograd.grad(jt_u, u, grad_outputs=e_k, create_graph=True)  # J e_k per row
            total = total + column.pow(2).sum(-1)
        return total


class DecoderGradientConfig(ComponentConfig):
    """``lam``: weight of the gradient penalty, >= 0 (1e-7, Pythae's RAE-GP default);
    ``norm``: ``summed`` (the gradient of the summed reconstruction, as Ghosh et al.'s code) or
    ``frobenius`` (the decoder's whole Jacobian)."""

    lam: float = Field(1e-7, ge=0.0, description="weight of the decoder's squared gradient norm")
    norm: Literal["summed", "frobenius"] = Field(
        "summed", description="summed: |grad_z sum D(z)|^2; frobenius: |dD/dz|_F^2"
    )


class DecoderGradient(Regularizer):
    """lam * ||grad_z D(z)||^2 at the batch's codes, averaged: the RAE's gradient penalty,
    which keeps the decoder smooth around the codes (Ghosh et al. 2020, RAE-GP)."""

    name = "decoder-gradient"
    Config = DecoderGradientConfig
    weight_setting = "lam"

    def _y(self, step) -> torch.Tensor | None:
        y1 = step.y_onehot
        if y1 is None or y1.shape[0] == step.z.shape[0]:
            return y1
        return y1.repeat(step.z.shape[0] // y1.shape[0], 1)

    def penalty(self, step) -> torch.Tensor:
        output = step.output if step.training else None
        return self.config.lam * decoder_gradient_sq(step.model, step.z, self._y(step), self.config.norm, output).mean()

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        return {
            "decoder_gradient_sq": decoder_gradient_sq(step.model, step.z, self._y(step), self.config.norm)
            .mean()
            .detach()
        }
