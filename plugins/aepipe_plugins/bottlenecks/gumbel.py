"""The ``categorical`` bottleneck and the ``categorical-uniform`` prior."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from aepipe.plugin import Bottleneck, Code, ComponentConfig, ConfigError, Encoding, ModelSpec, Prior, require


class CategoricalConfig(ComponentConfig):
    """``categories``: K choices per latent (code_dim must be a multiple: code_dim / K latents);
    ``temperature``: the Gumbel-softmax temperature tau0 at the first step, annealed as
    ``max(min_temperature, temperature * exp(-anneal_rate * step))`` over optimizer steps;
    ``hard``: straight-through samples (one-hot forward, the relaxed gradient backward);
    ``beta``: weight of the KL to the uniform prior (1: the ELBO); ``warmup_steps``: in training
    that weight rises linearly from 0 to beta over this many optimizer steps (KL annealing, Bowman
    et al. 2016: without it the codes of a small dataset collapse to the prior), evaluation
    always uses beta."""

    categories: int = Field(10, ge=2, le=100_000, description="K, the choices of each latent; code_dim / K latents")
    temperature: float = Field(1.0, gt=0.0, description="the Gumbel-softmax temperature at the first step")
    min_temperature: float = Field(0.5, gt=0.0, description="the floor of the annealed temperature")
    anneal_rate: float = Field(1e-4, ge=0.0, description="r of temperature * exp(-r * step), per optimizer step")
    hard: bool = Field(False, description="straight-through: one-hot draws forward, the relaxed gradient backward")
    beta: float = Field(1.0, ge=0.0, description="weight of the KL to the uniform prior (1: the ELBO)")
    warmup_steps: int = Field(
        0, ge=0, description="optimizer steps over which the KL weight rises from 0 to beta in training"
    )


class CategoricalBottleneck(Bottleneck):
    """code_dim / ``categories`` categorical latents from the encoder's logits. In training the
    decoder sees L Gumbel-softmax draws at the scheduled temperature (straight-through with
    ``hard``), in evaluation L exact one-hot draws (the discrete model's ELBO); ``code`` is the
    one-hot most likely category of each latent.
    Its loss term ``kl`` (logged as ``penalty.kl``) is beta * KL(q(z | x) || uniform), summed
    over the latents: the VAE's KL, so no ``kl`` regularizer goes with it. ``encode --what
    indices`` gives the categories (n, latents), ``probs`` the posterior's probabilities."""

    name = "categorical"
    Config = CategoricalConfig
    what = ("indices", "probs")
    discrete = True
    support = "one-hot"
    loss_names = ("kl",)
    #: the straight-through draws and the KL's warm-up are code paths of their own
    conformance_settings = ({"hard": True, "warmup_steps": 10},)

    def __init__(self, config: CategoricalConfig, spec: ModelSpec):
        super().__init__(config, spec)
        k = config.categories
        require(spec.code_dim % k == 0, f"code_dim {spec.code_dim} is not a multiple of categories {k} "
                                        f"(code_dim = latents x categories, e.g. {max(1, spec.code_dim // k) * k})")
        require(config.min_temperature <= config.temperature,
                f"min_temperature {config.min_temperature} exceeds the initial temperature {config.temperature}")
        self.latents = spec.code_dim // k
        # optimizer steps taken: the temperature schedule's clock (a buffer: it survives a resume)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def setup(self, model) -> None:
        if model.probe(features=True).dist is not None:
            raise ConfigError(
                f"encoder '{model.encoder.name}' gives a posterior of its own (distribution = \"gaussian\"); "
                'the categorical bottleneck takes logits: set the encoder\'s distribution = "none"'
            )

    def temperature(self) -> torch.Tensor:
        """The Gumbel-softmax temperature at the current step, a 0-d tensor on the module's
        device (computed there: no read-back in a training step)."""
        c = self.config
        decayed = c.temperature * torch.exp(-c.anneal_rate * self.steps.to(torch.get_default_dtype()))
        return decayed.clamp_min(c.min_temperature)

    def kl_weight(self) -> torch.Tensor | float:
        """beta, scaled by the warm-up's share in training (a 0-d tensor there)."""
        c = self.config
        if not self.training or c.warmup_steps == 0:
            return c.beta
        return c.beta * (self.steps.to(torch.get_default_dtype()) / c.warmup_steps).clamp_max(1.0)

    def after_step(self) -> None:
        self.steps += 1

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        n, k = encoding.code.shape[0], self.config.categories
        logits = encoding.code.reshape(n, self.latents, k)
        log_probs = F.log_softmax(logits, dim=-1)
        probs = log_probs.exp()
        indices = logits.argmax(-1)
        code = self.from_indices(indices).to(logits.dtype)
        # KL(q || uniform) = sum_latents sum_k q_k (log q_k + log K)
        kl = (probs * (log_probs + math.log(k))).sum((-2, -1))
        repeated = logits.repeat(samples, 1, 1)
        if self.training:
            z = F.gumbel_softmax(repeated, tau=self.temperature(), hard=self.config.hard, dim=-1)
        else:  # exact draws of the categories (Gumbel-max): the discrete model's ELBO, no relaxation
            z = F.gumbel_softmax(repeated.detach(), tau=1.0, hard=True, dim=-1)
        z = z.reshape(samples * n, -1)
        return Code(code, z, samples, losses={"kl": self.kl_weight() * kl.mean()},
                    outputs={"indices": indices, "probs": probs.reshape(n, -1)})

    def from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        n = indices.shape[0]
        return F.one_hot(indices.long(), self.config.categories).reshape(n, -1).to(torch.get_default_dtype())

    def index_shape(self) -> tuple[int, int]:
        return self.latents, self.config.categories

    def epoch_metrics(self, model, split) -> dict[str, float]:
        """``temperature``: the Gumbel-softmax temperature reached (logged as val_temperature)."""
        return {"temperature": self.temperature()}


class UniformCategorical(Prior):
    """Every position of a discrete code takes each of its choices with equal probability: the
    categorical VAE's prior (and a VQ-VAE's, before a prior is fitted on its indices). Samples
    are the bottleneck's decoder inputs of uniform indices (one-hot codes for ``categorical``);
    it has no density for the relaxed draws, so ``kl`` and ``iw_nll`` do not use it."""

    name = "categorical-uniform"
    has_log_prob = False
    draws = "code"  # the bottleneck's own codes, from uniform indices

    def setup(self, model) -> None:
        bottleneck = model.bottleneck
        if not getattr(bottleneck, "discrete", False) or bottleneck.index_shape() is None:
            raise ConfigError(f"prior '{self.name}' draws the codes of a discrete bottleneck (e.g. categorical); "
                              f"bottleneck '{bottleneck.name or 'none'}' gives continuous codes")
        self._model = [model]  # a plain reference: not a submodule of the prior

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        model = self._model[0]
        weight = next(model.decoder.parameters())
        positions, choices = model.bottleneck.index_shape()
        indices = torch.randint(choices, (n, positions), device=weight.device)
        return model.bottleneck.from_indices(indices).to(weight.dtype)

