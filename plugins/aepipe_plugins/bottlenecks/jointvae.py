"""The ``jointvae`` bottleneck and the ``jointvae-prior`` (Dupont 2018, "Learning Disentangled
Joint Continuous and Discrete Representations").

Conventions:

- the code is ``continuous`` Gaussian latents beside ``discrete`` categorical latents of
  ``categories`` choices each, one-hot: model.code_dim = continuous + discrete x categories, in
  that order; the encoder gives 2 x continuous features (mean, log-variance) and the logits;
- in training the decoder sees reparameterised Gaussian draws beside Gumbel-softmax draws at
  ``temperature`` (0.67, the paper's); in evaluation the means beside the one-hot most likely
  categories (the paper's reconstructions);
- the loss terms are the paper's capacity objective: ``penalty.continuous`` = gamma |KL_c - C_c|
  and ``penalty.discrete`` = gamma |KL_d - C_d|, KL_c the KL of the Gaussian latents to N(0, I)
  and KL_d that of the categorical ones to the uniform, each summed over its latents and averaged
  over the batch; each capacity C rises linearly from 0 to its maximum over ``capacity_steps``
  optimizer steps (a buffer counts them: it survives a resume), and evaluation uses the
  maximum. C_d is capped at the discrete latents' largest KL, discrete x log(categories);
- per epoch it logs the raw ``kl_continuous`` and ``kl_discrete`` of the validation split.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from aepipe.plugin import (Bottleneck, Code, ComponentConfig, ConfigError, Encoding, ModelSpec, Prior, code_tensor,
                           require)


class JointConfig(ComponentConfig):
    """``categories``: K choices of each discrete latent; ``discrete``: how many discrete latents
    (the rest of model.code_dim is continuous); ``temperature`` of the Gumbel-softmax draws;
    ``gamma``: weight of the capacity terms; ``continuous_capacity`` and ``discrete_capacity``:
    the KLs (nats) the capacities reach after ``capacity_steps`` optimizer steps."""

    categories: int = Field(10, ge=2, le=10_000, description="K, the choices of each discrete latent")
    discrete: int = Field(1, ge=1, le=1024, description="discrete latents; the rest of code_dim is continuous")
    temperature: float = Field(0.67, gt=0.0, description="temperature of the Gumbel-softmax draws in training")
    gamma: float = Field(30.0, ge=0.0, description="weight of |KL - C| of each part")
    continuous_capacity: float = Field(5.0, ge=0.0,
                                       description="the continuous KL's capacity at the end of its schedule (nats)")
    discrete_capacity: float = Field(5.0, ge=0.0,
                                     description="the discrete KL's capacity at the end (nats; capped at its largest "
                                                 "KL)")
    capacity_steps: int = Field(25_000, ge=1, description="optimizer steps over which both capacities rise from 0")


class JointBottleneck(Bottleneck):
    """Continuous and discrete latents in one code (JointVAE): Gaussian latents beside one-hot
    categorical ones (Gumbel-softmax in training), each part's KL held at a capacity that rises
    over training (``penalty.continuous``, ``penalty.discrete``). ``encode --what indices`` gives
    the categories (n, discrete), ``probs`` their probabilities, ``mean`` and ``logvar`` the
    Gaussian part's posterior."""

    name = "jointvae"
    Config = JointConfig
    what = ("indices", "probs", "mean", "logvar")
    support = "real+one-hot"
    loss_names = ("continuous", "discrete")
    conformance_settings = ({"discrete": 2, "categories": 3},)

    def __init__(self, config: JointConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.continuous = self.continuous_width(config, spec)
        require(self.continuous >= 1, f"model.code_dim = {spec.code_dim} leaves no continuous latent beside discrete "
                                      f"x categories = {config.discrete} x {config.categories}: code_dim = continuous "
                                      "+ discrete x categories")
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @staticmethod
    def continuous_width(config: JointConfig, spec: ModelSpec) -> int:
        return spec.code_dim - config.discrete * config.categories

    @classmethod
    def features(cls, config: JointConfig, spec: ModelSpec) -> int:
        return 2 * cls.continuous_width(config, spec) + config.discrete * config.categories

    def setup(self, model) -> None:
        if model.probe(features=True).dist is not None:
            raise ConfigError(f"encoder '{model.encoder.name}' gives a posterior of its own (distribution = "
                              "\"gaussian\"); the jointvae bottleneck takes the means, log-variances and logits: set "
                              "its distribution = \"none\"")

    def capacities(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(C_c, C_d) now: rising in training, the maxima in evaluation."""
        c = self.config
        top_d = min(c.discrete_capacity, c.discrete * math.log(c.categories))
        if not self.training:
            return c.continuous_capacity, top_d
        share = (self.steps.to(torch.get_default_dtype()) / c.capacity_steps).clamp_max(1.0)
        return c.continuous_capacity * share, top_d * share

    def after_step(self) -> None:
        self.steps += 1

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        c, n, d = self.config, encoding.code.shape[0], self.continuous
        mean, logvar, logits = encoding.code.split([d, d, c.discrete * c.categories], dim=1)
        logits = logits.reshape(n, c.discrete, c.categories)
        log_probs = F.log_softmax(logits, dim=-1)
        probs = log_probs.exp()
        kl_c = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
        kl_d = (probs * (log_probs + math.log(c.categories))).sum((-2, -1)).mean()
        indices = logits.argmax(-1)
        code = torch.cat([mean, F.one_hot(indices, c.categories).to(mean.dtype).reshape(n, -1)], dim=1)
        if self.training:
            std = (0.5 * logvar).exp().repeat(samples, 1)
            gaussian = mean.repeat(samples, 1) + std * torch.randn_like(std)
            relaxed = F.gumbel_softmax(logits.repeat(samples, 1, 1), tau=c.temperature, hard=False, dim=-1)
            z = torch.cat([gaussian, relaxed.reshape(samples * n, -1)], dim=1)
        else:
            z = code.repeat(samples, 1)
        cap_c, cap_d = self.capacities()
        losses = {"continuous": c.gamma * (kl_c - cap_c).abs(), "discrete": c.gamma * (kl_d - cap_d).abs()}
        return Code(code, z, samples, losses=losses,
                    outputs={"indices": indices, "probs": probs.reshape(n, -1), "mean": mean, "logvar": logvar})

    def epoch_metrics(self, model, split) -> dict[str, torch.Tensor]:
        """The raw KLs of the validation split (nats, per input): ``kl_continuous``, ``kl_discrete``."""
        mean, logvar = code_tensor(model, split, what="mean"), code_tensor(model, split, what="logvar")
        probs = code_tensor(model, split, what="probs").clamp_min(1e-12)
        kl_c = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
        kl_d = (probs * (probs.log() + math.log(self.config.categories))).sum(1).mean()
        return {"kl_continuous": kl_c, "kl_discrete": kl_d}


class JointPrior(Prior):
    """The JointVAE's prior: N(0, I) for the continuous latents beside uniform one-hot categories,
    laid out as the ``jointvae`` bottleneck's code (it reads the layout from the bottleneck). Its
    draws are the bottleneck's own codes; it has no density for the relaxed draws."""

    name = "jointvae-prior"
    has_log_prob = False
    draws = "code"
    conformance = {"variant": "jointvae"}

    def __init__(self, config: ComponentConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.register_buffer("anchor", torch.zeros(()), persistent=False)  # its device and dtype

    def setup(self, model) -> None:
        if not isinstance(model.bottleneck, JointBottleneck):
            raise ConfigError(f"prior '{self.name}' draws the codes of the jointvae bottleneck; "
                              f"bottleneck '{getattr(model.bottleneck, 'name', None) or 'none'}' is another")
        c = model.bottleneck.config
        self.layout = (model.bottleneck.continuous, c.discrete, c.categories)

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        continuous, discrete, categories = self.layout
        gaussian = torch.randn(n, continuous, device=self.anchor.device, dtype=self.anchor.dtype)
        indices = torch.randint(categories, (n, discrete), device=self.anchor.device)
        return torch.cat([gaussian, F.one_hot(indices, categories).to(gaussian.dtype).reshape(n, -1)], dim=1)
