"""The ``two-stage`` sampler (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models"): a second,
small VAE fitted on the first model's training codes, whose prior draws, decoded, are the
samples' codes.

Conventions: the codes are standardized (each dimension to mean 0, standard deviation 1, as the
``flow`` sampler does); the second VAE has an MLP encoder and decoder of ``hidden`` units, a
latent u of ``latent_dim`` (default the code's width) with N(0, I) prior, and a Gaussian decoder
p(z | u) = N(mu(u), gamma I) with one learned variance gamma (the paper's: gamma falls as the
second stage fits, so that its aggregate posterior matches N(0, I)). It is fitted by its own Adam
on the negative ELBO, and ``sample`` decodes u ~ N(0, I) to mu(u) (in the codes' units).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from aepipe.plugin import ComponentConfig, ConfigError, ModelSpec, Sampler, code_tensor


class TwoStageConfig(ComponentConfig):
    """``hidden``: units of the second VAE's encoder and decoder layers; ``latent_dim`` of u
    (default: the code's width); fitted with Adam (``lr``, ``batch_size``) for ``epochs`` passes
    over the standardized training codes (at most ``max_codes``, a random subset drawn with
    ``seed``, which also seeds the fit); ``fit_on``: ``code`` (each input's code: the posterior
    mean) or ``sample``, one draw of its posterior where the bottleneck offers one (``encode
    --what sample``, the paper's: the second stage models the aggregate posterior q(z)), else its
    code. ``code`` is the default: on the digits VAE it draws far closer to the data (figures in
    docs/variants.md)."""

    hidden: list[PositiveInt] = Field([256, 256], min_length=1, max_length=8,
                                      description="hidden units of the second VAE's MLPs")
    latent_dim: PositiveInt | None = Field(None, description="width of the second VAE's latent (default: the code's)")
    epochs: int = Field(300, ge=1, le=100_000, description="passes of Adam over the training codes")
    batch_size: int = Field(128, ge=1, description="codes per Adam step")
    lr: float = Field(1e-3, gt=0.0, description="Adam's learning rate")
    seed: int = Field(0, ge=0, description="seed of the subset, the batch order and the fit's draws")
    max_codes: int = Field(50_000, ge=2, description="at most this many training codes (a random subset)")
    fit_on: Literal["sample", "code"] = Field("code", description="what of each training input the second VAE fits: "
                                                                  "its code (the posterior mean) or a draw of its "
                                                                  "posterior (the paper's)")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TwoStageSampler(Sampler):
    """A second VAE fitted on the standardized training codes (Dai & Wipf 2019's two-stage VAE,
    with a learned decoder variance); ``sample`` decodes its N(0, I) draws. Its weights and the
    codes' mean and scale are its state (saved with the model); the model's optimizer never sees
    them."""

    name = "two-stage"
    Config = TwoStageConfig
    #: the conformance suite checks the contract, not the fit: a short one
    conformance = {"model": {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]},
                             "sampler": {"name": "two-stage", "hidden": [32], "epochs": 5, "max_codes": 256}}}

    def __init__(self, config: TwoStageConfig, spec: ModelSpec):
        super().__init__(config, spec)
        d = spec.code_dim
        self.latent = config.latent_dim or d
        self.encoder = _mlp([d, *config.hidden, 2 * self.latent])
        self.decoder = _mlp([self.latent, *config.hidden, d])
        self.log_gamma = nn.Parameter(torch.zeros(()))
        self.register_buffer("loc", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))

    def setup(self, model) -> None:
        if model.spec.conditional:
            raise ConfigError("sampler 'two-stage' fits codes without their labels; a conditional model samples "
                              "through 'prior'")
        if getattr(model.bottleneck, "discrete", False):
            raise ConfigError(f"sampler 'two-stage' models continuous codes; bottleneck '{model.bottleneck.name}' "
                              "gives discrete ones")

    def neg_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The second VAE's negative ELBO of standardized codes ``x``, per code (one draw)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        u = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        mu = self.decoder(u)
        gamma = self.log_gamma.exp()
        nll = 0.5 * ((x - mu).pow(2) / gamma).sum(1) + 0.5 * x.shape[1] * (math.log(2 * math.pi) + self.log_gamma)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return nll + kl

    def fit(self, model, split) -> dict[str, float]:
        c = self.config
        offers = ("code", *getattr(model.bottleneck, "what", ()))
        codes = code_tensor(model, split,
                            what="sample" if c.fit_on == "sample" and "sample" in offers else "code").to(self.loc.dtype)
        gen = torch.Generator().manual_seed(c.seed)
        if len(codes) > c.max_codes:
            codes = codes[torch.randperm(len(codes), generator=gen)[: c.max_codes].to(codes.device)]
        if len(codes) < 2:
            raise ConfigError(f"sampler 'two-stage': {len(codes)} training codes are too few to fit a second VAE")
        self.loc.copy_(codes.mean(0))
        self.scale.copy_(codes.std(0).clamp_min(1e-6))
        x = (codes - self.loc) / self.scale
        optimizer = torch.optim.Adam([p for p in self.parameters()], lr=c.lr)
        with torch.enable_grad(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(c.seed)
            self.train()
            for _ in range(c.epochs):
                order = torch.randperm(len(x), generator=gen).to(x.device)
                for start in range(0, len(x), c.batch_size):
                    loss = self.neg_elbo(x[order[start: start + c.batch_size]]).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            self.eval()
            with torch.no_grad():
                fitted = self.neg_elbo(x).mean() + self.scale.log().sum()  # in the codes' own units
        return {"two_stage_neg_elbo": float(fitted), "two_stage_gamma": float(self.log_gamma.detach().exp())}

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            u = torch.randn(n, self.latent, device=self.loc.device, dtype=self.loc.dtype)
            return self.decoder(u) * self.scale + self.loc
