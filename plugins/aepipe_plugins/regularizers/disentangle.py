"""The disentangling regularizers: ``tc-decomposition`` (beta-TCVAE), ``tc-discriminator``
(FactorVAE), ``dip`` (DIP-VAE I and II) and ``capacity`` (the capacity-annealed beta-VAE)."""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from aepipe.plugin import ComponentConfig, ConfigError, DiagNormal, Regularizer, batches, kl_monte_carlo
from aepipe_plugins.regularizers import tc_estimators as est


# --- shared pieces --------------------------------------------------------------------------


def _posterior(step) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation ``(n, D)`` of the step's diagonal Gaussian posterior."""
    q = step.encoding.dist
    return q.mean, q.stddev


def _require_gaussian(model, who: str) -> None:
    """A regularizer that reads q(z | x)'s mean and standard deviation refuses other codes."""
    probe = model.probe()
    q = probe.dist
    if q is None or probe.log_q is not None or not (hasattr(q, "mean") and hasattr(q, "stddev")):
        raise ConfigError(
            f"regularizer '{who}' needs a diagonal Gaussian posterior: set [model.bottleneck] name = \"gaussian\" "
            f"(bottleneck '{model.bottleneck.name or 'none'}' gives "
            f"{'a deterministic code' if q is None and probe.log_q is None else 'another posterior'})"
        )


def _require_prior(model, who: str) -> None:
    if model.prior is None or not model.prior.has_log_prob:
        what = "none" if model.prior is None else f"prior '{model.prior.name}' has no log density"
        raise ConfigError(f"regularizer '{who}' needs a prior with a log density (e.g. [model.prior] name = "
                          f"\"standard-normal\"); {what}")


def kl_per_example(step) -> torch.Tensor:
    """KL(q(z | x) || p(z)) per example, (n,): in closed form for a diagonal Gaussian posterior
    and prior, else mean_l [log q(z_l | x) - log p(z_l)] over the step's L draws."""
    code, prior = step.encoding, step.model.prior
    y = step.y if prior.class_conditional else None
    normal = prior.diagonal_normal(y)
    if isinstance(code.dist, DiagNormal) and code.log_q is None and normal is not None:
        return code.dist.kl_to_normal(*normal)
    n = step.x.shape[0]
    y_rep = None if y is None else y.repeat(code.samples)
    log_p = prior.log_prob(step.z, y_rep).reshape(code.samples, n)
    return kl_monte_carlo(code.log_q_of_z(), log_p)


def _neg_elbo(step, kl: torch.Tensor) -> torch.Tensor:
    samples = step.z.shape[0] // step.x.shape[0]
    target = step.x.repeat(samples, 1) if samples > 1 else step.x
    recon = step.model.likelihood.nll(step.output, target).reshape(samples, -1).mean(0)
    return (recon + kl).mean()


class _KnowsDatasetSize(Regularizer):
    """Keeps N, the training split's size, in a buffer: set from the model's spec when the model
    is built for its data (or from ``dataset_size``), restored with the weights otherwise."""

    def __init__(self, config, spec):
        super().__init__(config, spec)
        size = getattr(config, "dataset_size", None) or spec.train_size
        self.register_buffer("dataset_size", torch.tensor(int(size), dtype=torch.long))

    def size(self) -> int:
        n = int(self.dataset_size)
        if n <= 0:
            raise ConfigError(
                f"regularizer '{self.name}' needs the training split's size: build the model with its data "
                "(aepipe does when it trains) or set dataset_size"
            )
        return n


# --- beta-TCVAE -----------------------------------------------------------------------------


class TCDecompositionConfig(ComponentConfig):
    """The beta-TCVAE's weights of the three terms of the KL (Chen et al. 2018, eq. 4):
    ``alpha`` the index-code mutual information, ``beta`` the total correlation, ``gamma`` the
    dimension-wise KL; ``alpha = beta = gamma = 1`` is the VAE. ``estimator``: minibatch-weighted
    (``mws``, the paper's) or minibatch stratified sampling (``mss``); ``dataset_size`` overrides
    N of either (default: the training split's size)."""

    alpha: float = Field(1.0, ge=0.0, description="weight of the index-code mutual information I(x; z) (paper: 1)")
    beta: float = Field(
        6.0,
        ge=0.0,
        description="weight of the total correlation TC(z) (paper: 1 to 10; 6 a common choice on 2D shapes)",
    )
    gamma: float = Field(
        1.0, ge=0.0, description="weight of the dimension-wise KL sum_d KL(q(z_d) || p(z_d)) (paper: 1)"
    )
    estimator: Literal["mws", "mss"] = Field(
        "mws",
        description="mws: minibatch-weighted sampling (the paper's; its values "
        "run about D log N - log M above the TC, its gradients do not); mss: minibatch stratified sampling",
    )
    dataset_size: Optional[PositiveInt] = Field(
        None, description="N of the estimator; unset: the training split's size"
    )


class TCDecomposition(_KnowsDatasetSize):
    """alpha * I(x; z) + beta * TC(z) + gamma * sum_d KL(q(z_d) || p(z_d)) in place of the VAE's
    KL, each term estimated over the batch by minibatch-weighted (or stratified) sampling (Chen
    et al. 2018). Logs ``mi``, ``tc``, ``dimension_kl`` (their sum: the Monte Carlo KL), the
    closed-form ``kl`` and ``neg_elbo`` on validation and test batches; the three estimates
    depend on the batch size (see :func:`estimators.kl_decomposition`)."""

    name = "tc-decomposition"
    Config = TCDecompositionConfig
    weight_setting = "beta"

    def setup(self, model) -> None:
        _require_gaussian(model, self.name)
        _require_prior(model, self.name)

    def terms(self, step) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mi, tc, dimension_kl)`` per draw, (L, n)."""
        mean, std = _posterior(step)
        n = mean.shape[0]
        z = step.z.reshape(-1, n, mean.shape[1])
        prior = step.model.prior
        y = None
        if prior.class_conditional and step.y is not None:
            y = step.y.repeat(z.shape[0])
        log_pz = prior.log_prob(step.z, y).reshape(z.shape[0], n)
        return est.kl_decomposition(z, mean, std, log_pz, self.size(), self.config.estimator == "mss")

    def penalty(self, step) -> torch.Tensor:
        mi, tc, dkl = self.terms(step)
        c = self.config
        return (c.alpha * mi + c.beta * tc + c.gamma * dkl).mean()

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        mi, tc, dkl = self.terms(step)
        kl = kl_per_example(step)
        return {"mi": mi.mean(), "tc": tc.mean(), "dimension_kl": dkl.mean(), "kl": kl.mean(),
                "neg_elbo": _neg_elbo(step, kl)}


# --- FactorVAE ------------------------------------------------------------------------------


class TCDiscriminatorConfig(ComponentConfig):
    """FactorVAE's total-correlation term (Kim & Mnih 2018): ``gamma`` weighs the
    discriminator's estimate of TC(z) in the model's loss; the discriminator (``hidden`` widths,
    leaky ReLU 0.2) tells codes from dimension-wise permuted codes, trained with its own Adam
    (``lr``, ``betas``)."""

    gamma: float = Field(
        35.0, ge=0.0, description="weight of the TC estimate (the paper sweeps 10 to 100 on 2D Shapes; 35 there)"
    )
    hidden: list[PositiveInt] = Field([1000] * 5, min_length=1, description="the discriminator's hidden widths "
                                      "(the paper: 6 layers of 1000 units, the output layer included)")
    lr: float = Field(
        1e-4,
        gt=0.0,
        description="the discriminator's learning rate (paper: 1e-4, as the model's train.lr; "
        "a model 20 times faster than its discriminator, train.lr = 2e-3, came out no more disentangled than the VAE)",
    )
    betas: tuple[float, float] = Field((0.5, 0.9), description="the discriminator's Adam betas (paper: 0.5, 0.9)")


class TCDiscriminator(Regularizer):
    """gamma * TC(z), TC estimated by the discriminator's mean logit on the codes,
    log D(z) / (1 - D(z)) (the density-ratio trick). After each model step the discriminator
    takes one step of its own: the batch's codes (label 1) against the same codes with each
    dimension permuted across the batch (label 0), which are draws of prod_d q(z_d). The paper
    permutes a second batch; this uses the step's own. Logs ``tc`` and
    ``discriminator_accuracy`` on validation and test batches."""

    name = "tc-discriminator"
    Config = TCDiscriminatorConfig
    weight_setting = "gamma"
    owns_parameters = True
    #: the factor-vae variant with a small discriminator: the paper's five layers of 1000 (4M
    #: parameters) cost the conformance suite seconds per build and step and check nothing more
    conformance = {"variant": "factor-vae", "model": {"regularizers": {"tc-discriminator": {"hidden": [64, 64]}}}}

    def __init__(self, config: TCDiscriminatorConfig, spec):
        super().__init__(config, spec)
        width, layers = spec.code_dim, []
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        self.discriminator = nn.Sequential(*layers, nn.Linear(width, 1))

    def setup(self, model) -> None:
        if model.spec.code_dim < 2:
            raise ConfigError(f"regularizer '{self.name}' needs code_dim >= 2: a 1-d code has no total correlation")
        lo, hi = self.config.betas
        if not (0.0 <= lo < 1.0 and 0.0 <= hi < 1.0):
            raise ConfigError(f"betas must lie in [0, 1), got {list(self.config.betas)}")
        self.optimizers = {
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(), lr=self.config.lr, betas=self.config.betas
            )
        }

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.discriminator(z).squeeze(-1)

    def penalty(self, step) -> torch.Tensor:
        return self.config.gamma * self.logits(step.z).mean()

    def update(self, step) -> dict[str, torch.Tensor]:
        codes = step.z.detach()
        permuted = est.permute_dims(codes)
        opt = self.optimizers["discriminator"]
        opt.zero_grad(set_to_none=True)  # the model's step left gradients of the TC term here
        real, fake = self.logits(codes), self.logits(permuted)
        loss = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                      + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        loss.backward()
        opt.step()
        self.discriminator.zero_grad(set_to_none=True)
        return {f"{self.name}.d_loss": loss.detach()}

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        devices = [step.z.device] if step.z.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            permuted = est.permute_dims(step.z)
        real, fake = self.logits(step.z), self.logits(permuted)
        accuracy = 0.5 * ((real > 0).to(real.dtype).mean() + (fake < 0).to(fake.dtype).mean())
        return {"tc": real.mean(), "discriminator_accuracy": accuracy}


# --- DIP-VAE --------------------------------------------------------------------------------


class DIPConfig(ComponentConfig):
    """DIP-VAE (Kumar et al. 2018): ``type`` ``i`` pushes the covariance of the encoder's mean
    to the identity, ``ii`` that of the aggregate posterior; ``lambda_od`` weighs the squared
    off-diagonal entries, ``lambda_d`` the squared distance of the diagonal from 1."""

    type: Literal["i", "ii"] = Field("i", description="i: Cov[mu(x)]; ii: E[diag sigma^2(x)] + Cov[mu(x)]")
    lambda_od: float = Field(10.0, ge=0.0, description="weight of sum_{i != j} Cov_ij^2 (paper: 10)")
    lambda_d: Optional[float] = Field(None, ge=0.0, description="weight of sum_i (Cov_ii - 1)^2; unset: the paper's "
                                      "10 * lambda_od for type i, lambda_od for type ii")


class DIP(Regularizer):
    """lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2, C the batch's covariance
    of the encoder's mean (type i) or of the aggregate posterior (type ii), added to the VAE's
    loss. Logs ``covariance_off_diagonal`` and ``covariance_diagonal_gap`` of the batch's C on
    validation and test batches, and of the whole test split's codes once trained."""

    name = "dip"
    Config = DIPConfig
    weight_setting = "lambda_od"

    @property
    def lambda_d(self) -> float:
        c = self.config
        if c.lambda_d is not None:
            return c.lambda_d
        return 10.0 * c.lambda_od if c.type == "i" else c.lambda_od

    def setup(self, model) -> None:
        if self.config.type == "ii":
            _require_gaussian(model, f"{self.name}' type 'ii")

    def covariance(self, step) -> torch.Tensor:
        if self.config.type == "ii":
            mean, std = _posterior(step)
            return est.dip_covariance(mean, std, "ii")
        return est.dip_covariance(step.encoding.code, None, "i")

    def penalty(self, step) -> torch.Tensor:
        cov = self.covariance(step)
        return self.config.lambda_od * est.off_diagonal_mass(cov) + self.lambda_d * est.diagonal_gap(cov)

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        cov = self.covariance(step)
        return {"covariance_off_diagonal": est.off_diagonal_mass(cov), "covariance_diagonal_gap": est.diagonal_gap(cov)}

    def final_metrics(self, model, data) -> dict[str, torch.Tensor]:
        """``covariance_off_diagonal`` and ``covariance_diagonal_gap`` of the covariance of the
        test split's codes (the posterior means), all at once rather than per batch."""
        codes = torch.cat([model.encode(xb, yb).code for xb, yb in batches(data.test, None, 2048)])
        cov = est.covariance(codes)
        return {"covariance_off_diagonal": est.off_diagonal_mass(cov), "covariance_diagonal_gap": est.diagonal_gap(cov)}


# --- capacity beta-VAE ----------------------------------------------------------------------


class CapacityConfig(ComponentConfig):
    """The capacity-annealed beta-VAE (Burgess et al. 2018): ``gamma`` * |KL - C|, where the
    capacity C rises linearly from 0 to ``c_max`` nats over ``anneal`` optimizer steps (``unit =
    "steps"``) or training epochs (``unit = "epochs"``), then stays there."""

    gamma: float = Field(1000.0, ge=0.0, description="weight of |KL - C| (paper: 1000 on dSprites)")
    c_max: float = Field(
        25.0, ge=0.0, description="the capacity C reached at the end of the schedule, nats (paper: 25)"
    )
    anneal: float = Field(100_000.0, gt=0.0, description="steps or epochs (unit) over which C rises from 0 to c_max "
                          "(paper: 100,000 steps)")
    unit: Literal["steps", "epochs"] = Field("steps", description="what anneal counts: optimizer steps, or epochs "
                                             "(examples trained on / the training split's size)")


class Capacity(_KnowsDatasetSize):
    """gamma * |KL(q(z | x) || p(z)) - C| in place of the VAE's KL, the KL averaged over the
    batch, C on its schedule. The schedule's clock (steps and examples trained on) lives in
    buffers, so a resumed run continues it. Logs ``kl`` and ``neg_elbo`` on validation and test
    batches and the current C as ``capacity`` each epoch (``val_capacity``)."""

    name = "capacity"
    Config = CapacityConfig
    weight_setting = "gamma"

    def __init__(self, config: CapacityConfig, spec):
        super().__init__(config, spec)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("examples", torch.zeros((), dtype=torch.long))
        self._batch = 0  # the size of the last training batch, counted at its optimizer step

    def setup(self, model) -> None:
        _require_prior(model, self.name)
        if not model.probe().stochastic:
            raise ConfigError(
                f"regularizer '{self.name}' needs a stochastic code: set [model.bottleneck] name = \"gaussian\""
            )

    def progress(self) -> torch.Tensor:
        """Steps, or epochs, trained so far (a 0-d tensor)."""
        if self.config.unit == "steps":
            return self.steps.to(torch.get_default_dtype())
        return self.examples.to(torch.get_default_dtype()) / self.size()

    def settled(self) -> bool:
        """C has reached ``c_max``: until then the loss measures the distance to a moving target."""
        return bool(self.progress() >= self.config.anneal)

    def capacity(self) -> torch.Tensor:
        """C now, nats."""
        c = self.config
        return est.capacity(self.progress(), c.anneal, c.c_max)

    def penalty(self, step) -> torch.Tensor:
        if step.training:
            self._batch = step.x.shape[0]
        kl = kl_per_example(step).mean()
        return self.config.gamma * (kl - self.capacity().to(kl.device, kl.dtype)).abs()

    def after_step(self) -> None:
        world = (
            torch.distributed.get_world_size()
            if torch.distributed.is_available() and torch.distributed.is_initialized()
            else 1
        )
        self.steps += 1
        self.examples += self._batch * world  # each process trains on its shard of the batch

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        kl = kl_per_example(step)
        return {"kl": kl.mean(), "neg_elbo": _neg_elbo(step, kl)}

    def epoch_metrics(self, model, split) -> dict[str, torch.Tensor]:
        """``capacity``: C at the end of the epoch (logged as val_capacity, beside val_kl)."""
        return {"capacity": self.capacity()}
