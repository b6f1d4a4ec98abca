"""The adversarial regularizer: a discriminator D(z) with its own optimizer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from aepipe.plugin import ComponentConfig, ConfigError, Regularizer, activation, mmd_rbf


class AdversarialConfig(ComponentConfig):
    """``hidden``: discriminator widths; ``lr``: learning rate of the discriminator and of the
    encoder's generator step (Adam, betas 0.5 and 0.999); ``weight``: scale of the generator
    loss; ``supervised``: feed the one-hot label to D and draw prior samples of the same class
    (needs a class-conditional prior, e.g. mixture with class_conditional = true)."""

    hidden: list[PositiveInt] = [256, 256]
    lr: float = Field(1e-3, gt=0.0)
    weight: float = Field(1.0, ge=0.0)
    supervised: bool = False


class Adversarial(Regularizer):
    """Each batch, after the reconstruction step: update D on prior samples (real) against
    codes (fake), then update the encoder so that D takes its codes for prior samples."""

    name = "adversarial"
    Config = AdversarialConfig
    weight_setting = "weight"
    owns_parameters = True

    def __init__(self, config: AdversarialConfig, spec):
        super().__init__(config, spec)
        width = spec.code_dim + (spec.n_classes if config.supervised else 0)
        layers: list[nn.Module] = []
        for h in config.hidden:
            layers += [nn.Linear(width, h), activation("leaky_relu")]
            width = h
        self.discriminator = nn.Sequential(*layers, nn.Linear(width, 1))

    def setup(self, model) -> None:
        if model.prior is None:
            raise ConfigError("regularizer 'adversarial' needs a prior to match: set [model.prior] name = ...")
        if self.config.supervised:
            if model.spec.n_classes < 2:
                raise ConfigError("adversarial: supervised = true needs a labelled dataset")
            if not model.prior.class_conditional:
                raise ConfigError(f"adversarial: supervised = true needs a class-conditional prior; prior "
                                  f"'{model.prior.name}' is not (set class_conditional = true)")
        betas = (0.5, 0.999)
        self.optimizers = {
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=self.config.lr, betas=betas),
            "generator": torch.optim.Adam(
                [*model.encoder.parameters(), *model.bottleneck.parameters()], lr=self.config.lr, betas=betas
            ),
        }

    def _d(self, z: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        return self.discriminator(z if label is None else torch.cat([z, label], -1)).squeeze(-1)

    def penalty(self, step):
        return None  # acts in its own phase, in update()

    def update(self, step) -> dict[str, torch.Tensor]:
        model = step.model
        n = step.x.shape[0]
        label = None
        y = None
        if self.config.supervised:
            y = step.y
            label = F.one_hot(y.long(), model.spec.n_classes).to(step.x.dtype)
        code = model.bottleneck(model.encoder(step.x_tilde, step.y_onehot), step.y_onehot, 1)
        fake = code.z  # a posterior's one draw, or the deterministic code
        real = model.prior.sample(n, y)
        # regularization phase 1: the discriminator
        d_opt, g_opt = self.optimizers["discriminator"], self.optimizers["generator"]
        d_opt.zero_grad(set_to_none=True)
        d_real, d_fake = self._d(real, label), self._d(fake.detach(), label)
        d_loss = F.binary_cross_entropy_with_logits(
            d_real, torch.ones_like(d_real)
        ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        d_loss.backward()
        d_opt.step()
        # regularization phase 2: the encoder as generator
        g_opt.zero_grad(set_to_none=True)
        d_gen = self._d(fake, label)
        g_loss = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
        (self.config.weight * g_loss).backward()
        g_opt.step()
        self.discriminator.zero_grad(set_to_none=True)
        return {"adversarial.d_loss": d_loss.detach(), "adversarial.g_loss": g_loss.detach()}

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        model = step.model
        y = step.y if self.config.supervised else None
        devices = [step.x.device] if step.x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            real = model.prior.sample(step.x.shape[0], y)
        return {"prior_mmd": mmd_rbf(step.encoding.code, real)}
