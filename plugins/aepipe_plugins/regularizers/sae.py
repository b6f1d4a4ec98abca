"""Penalties of sparse autoencoders: the L1 of the code weighted by the decoder's atom norms
(Anthropic's ReLU SAE, April 2024 update) and the AuxK loss that revives dead latents (Gao et
al. 2024). Both need the ``sae-decoder``; AuxK needs a bottleneck that tracks dead latents."""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from aepipe.plugin import ComponentConfig, ConfigError, Regularizer


def _need_dictionary(reg: Regularizer, model) -> None:
    if not hasattr(model.decoder, "atom_norms"):
        raise ConfigError(f"regularizer '{reg.name}' needs the decoder 'sae-decoder'; got '{model.decoder.name}'")


class WeightedL1Config(ComponentConfig):
    """``lam``: lambda in lambda * sum_j f_j ||d_j|| (averaged over the batch), >= 0 (for inputs of
    unit mean squared norm; Anthropic's 5 at norm sqrt(d) is about 0.25 here, d = 384)."""

    lam: float = Field(0.1, ge=0.0)


class DecoderWeightedL1(Regularizer):
    """lambda * sum_j f_j ||d_j||: the code's L1, each latent weighted by its atom's norm, so
    that shrinking codes by growing atoms does not pay."""

    name = "decoder-weighted-l1"
    Config = WeightedL1Config
    weight_setting = "lam"

    def setup(self, model) -> None:
        _need_dictionary(self, model)

    def penalty(self, step) -> torch.Tensor:
        return self.config.lam * (step.encoding.code.abs() * step.model.decoder.atom_norms()).sum(-1).mean()


class AuxKConfig(ComponentConfig):
    """``alpha``: the loss's weight (Gao et al.: 1/32); ``k_aux``: the dead latents that
    reconstruct the residual (default: half the input width)."""

    alpha: float = Field(1 / 32, ge=0.0)
    k_aux: Optional[int] = Field(None, ge=1)


class AuxK(Regularizer):
    """alpha * ||e - e^||^2 / ||e - mean e||^2: the residual e = x - x^ (held fixed) reconstructed
    by the ``k_aux`` largest pre-activations among the dead latents alone, through the
    dictionary (no bias): it gives dead latents a gradient. Zero while no latent is dead."""

    name = "auxk"
    Config = AuxKConfig
    weight_setting = "alpha"

    def setup(self, model) -> None:
        _need_dictionary(self, model)
        if not hasattr(model.bottleneck, "dead"):
            raise ConfigError(f"regularizer 'auxk' needs a bottleneck that tracks dead latents; got '{model.bottleneck.name}'")

    def penalty(self, step) -> torch.Tensor | None:
        if not step.training:
            return None
        dead = step.model.bottleneck.dead()
        pre = step.features.code.masked_fill(~dead, float("-inf"))
        k = min(self.config.k_aux or max(1, self.spec.input_dim // 2), pre.shape[-1])
        values, indices = pre.topk(k, dim=-1, sorted=False)
        aux = torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))
        e = (step.x - step.output).detach()
        e_hat = aux @ step.model.decoder.weight
        loss = (e - e_hat).pow(2).sum() / (e - e.mean(0)).pow(2).sum().clamp_min(1e-12)
        return self.config.alpha * loss * dead.any()
