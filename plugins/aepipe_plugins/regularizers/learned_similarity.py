"""The VAE-GAN's learned similarity (Larsen et al. 2016): a discriminator with its own optimizer
tells real inputs from reconstructions and decoded prior samples; the distance between its
features of an input and of its reconstruction replaces the likelihood's term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from aepipe.plugin import ConfigError, ModelSpec, activation
from aepipe_plugins.regularizers.perceptual import ReconstructionLoss, ReconstructionLossConfig, image_chw


class LearnedSimilarityConfig(ReconstructionLossConfig):
    """``hidden``: the discriminator's layers: for images 3x3 stride-2 convolutions with these
    channels, else linear layers of these widths (leaky ReLU), then one logit;
    ``feature_layer``: which hidden layer's activations (1-based; -1: the last, Pythae's
    default) measure the similarity: the loss is 1/2 ||Dis_l(x) - Dis_l(x^)||^2 per example,
    the Gaussian NLL of Larsen et al. up to a constant; ``lr``: learning rate of the
    discriminator and of the decoder's adversarial step (Adam, betas 0.5 and 0.999, as the
    AAE's); ``adversarial_weight``: scale of the decoder's GAN loss (on reconstructions and
    prior samples, in its own step after the model's; the paper's gamma, the similarity's weight
    against it in the decoder's loss, is weight / adversarial_weight); ``weight``,
    ``replace_likelihood``: as every reconstruction loss."""

    hidden: list[PositiveInt] = [32, 64]
    feature_layer: int = -1
    lr: float = Field(3e-4, gt=0.0)
    adversarial_weight: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _layer_exists(self) -> "LearnedSimilarityConfig":
        depth = len(self.hidden)
        if depth == 0:
            raise ValueError("hidden needs at least one layer (its features measure the similarity)")
        if not (1 <= self.feature_layer <= depth or self.feature_layer == -1):
            raise ValueError(
                f"feature_layer = {self.feature_layer}: expected -1 or 1..{depth} (hidden has {depth} layers)"
            )
        return self


class Discriminator(nn.Module):
    """Hidden layers (convolutional for images) and a logit; ``features(x, layer)`` gives one
    hidden layer's activations, flattened."""

    def __init__(self, spec: ModelSpec, hidden: list[int]):
        super().__init__()
        self.chw = image_chw(spec.image_shape)
        layers: list[nn.Module] = []
        if self.chw is not None:
            channels, side = self.chw[0], self.chw[1:]
            for c in hidden:
                layers.append(nn.Sequential(nn.Conv2d(channels, c, 3, stride=2, padding=1), activation("leaky_relu")))
                channels, side = c, tuple((s + 1) // 2 for s in side)
            width = channels * side[0] * side[1]
        else:
            width = spec.input_dim
            for h in hidden:
                layers.append(nn.Sequential(nn.Linear(width, h), activation("leaky_relu")))
                width = h
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(width, 1)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *self.chw) if self.chw is not None else x

    def features(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        h = self._input(x)
        for block in self.layers[:layer]:
            h = block(h)
        return h.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x, len(self.layers))).squeeze(-1)


class LearnedSimilarity(ReconstructionLoss):
    """Discriminator features as the reconstruction loss; the discriminator, with its own
    optimizer, tells inputs from reconstructions and prior samples (Larsen et al. 2016)."""

    name = "learned-similarity"
    Config = LearnedSimilarityConfig
    owns_parameters = True

    def __init__(self, config: LearnedSimilarityConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.layer = len(config.hidden) if config.feature_layer == -1 else config.feature_layer
        self.discriminator = Discriminator(spec, list(config.hidden))

    def setup(self, model) -> None:
        if model.prior is None:
            raise ConfigError(
                "regularizer 'learned-similarity' needs a prior to decode samples of: set [model.prior] name = ..."
            )
        betas = (0.5, 0.999)
        self.optimizers = {
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=self.config.lr, betas=betas),
            "generator": torch.optim.Adam(model.decoder.parameters(), lr=self.config.lr, betas=betas),
        }

    def penalty(self, step) -> torch.Tensor | None:
        """The feature distance (less the likelihood's NLL where it replaces it) in training; in
        evaluation none: the discriminator keeps moving, so the validation loss, which ranks
        epochs and keeps the best one's weights, stays the likelihood's ELBO, and the distance is
        logged apart (``feature_distance``)."""
        return super().penalty(step) if step.training else None

    def loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real = self.discriminator.features(x, self.layer)
        return 0.5 * (self.discriminator.features(recon, self.layer) - real).pow(2).sum(-1)

    def _fakes(self, step) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructions of the step's inputs and decoded prior samples, by the decoder as it
        is now (after the model's step); differentiable in the decoder only."""
        model = step.model
        n = step.x.shape[0]
        with torch.no_grad():
            z = model.bottleneck(model.encoder(step.x_tilde, step.y_onehot), step.y_onehot, 1).z
            prior_z = model.prior.sample(n, step.y if model.prior.class_conditional else None)
        recon = model.likelihood.mean(model.decoder(z, step.y_onehot))
        sampled = model.likelihood.mean(model.decoder(prior_z.to(z.dtype), step.y_onehot))
        return recon, sampled

    def update(self, step) -> dict[str, torch.Tensor]:
        recon, sampled = self._fakes(step)
        d_opt, g_opt = self.optimizers["discriminator"], self.optimizers["generator"]
        d = self.discriminator
        # phase 1: the discriminator, inputs (real) against reconstructions and prior samples (fake)
        d_opt.zero_grad(set_to_none=True)  # also drops what the model's step left on its parameters
        d_real, d_recon, d_prior = d(step.x), d(recon.detach()), d(sampled.detach())
        d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_recon, torch.zeros_like(d_recon))
                  + F.binary_cross_entropy_with_logits(d_prior, torch.zeros_like(d_prior)))
        d_loss.backward()
        d_opt.step()
        # phase 2: the decoder as generator (non-saturating: it wants both fakes taken for real)
        g_opt.zero_grad(set_to_none=True)
        g_recon, g_prior = d(recon), d(sampled)
        g_loss = (F.binary_cross_entropy_with_logits(g_recon, torch.ones_like(g_recon))
                  + F.binary_cross_entropy_with_logits(g_prior, torch.ones_like(g_prior)))
        (self.config.adversarial_weight * g_loss).backward()
        g_opt.step()
        d.zero_grad(set_to_none=True)
        step.model.decoder.zero_grad(set_to_none=True)
        return {"learned-similarity.d_loss": d_loss.detach(), "learned-similarity.g_loss": g_loss.detach()}

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        """``feature_distance``: the similarity loss per example, unweighted; ``disc_real`` and
        ``disc_recon``: the discriminator's mean probability that inputs, and their
        reconstructions, are real."""
        recon, target = self._pair(step)
        return {"feature_distance": self.loss(recon, target).mean(),
                "disc_real": torch.sigmoid(self.discriminator(step.x)).mean(),
                "disc_recon": torch.sigmoid(self.discriminator(recon)).mean()}
