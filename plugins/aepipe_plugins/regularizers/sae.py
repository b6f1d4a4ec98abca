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
            raise ConfigError("regularizer 'auxk' needs a bottleneck that tracks dead latents; got "
                              f"'{model.bottleneck.name}'")

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


class GatedPenaltyConfig(ComponentConfig):
    """``lam``: the weight of the gate's L1, lambda * sum_j ReLU(pi_j) ||d_j||."""

    lam: float = Field(0.1, ge=0.0)


class GatedPenalty(Regularizer):
    """The gated SAE's training terms (Rajamanoharan et al. 2024): lambda * sum_j ReLU(pi_j)
    ||d_j|| on the gate's pre-activations pi, plus ||x - x^(ReLU(pi))||^2, the reconstruction from
    the gate alone through a frozen copy of the dictionary (so the gate learns to reconstruct)."""

    name = "gated-penalty"
    Config = GatedPenaltyConfig
    weight_setting = "lam"

    def setup(self, model) -> None:
        _need_dictionary(self, model)
        if model.bottleneck.name != "gated-code":
            raise ConfigError("regularizer 'gated-penalty' needs the bottleneck 'gated-code'; got "
                              f"'{model.bottleneck.name}'")

    def penalty(self, step) -> torch.Tensor:
        gate = torch.relu(step.features.code)
        decoder = step.model.decoder
        sparsity = (gate * decoder.atom_norms()).sum(-1).mean()
        frozen = gate @ decoder.weight.detach() + decoder.bias.detach()
        return self.config.lam * sparsity + (step.x - frozen).pow(2).sum(-1).mean()


class MatryoshkaConfig(ComponentConfig):
    """``prefixes``: the nested dictionaries' sizes, increasing, each below ``model.code_dim``
    (the whole dictionary is the main reconstruction)."""

    prefixes: list[int] = Field(default_factory=lambda: [96, 192, 384, 768])


class Matryoshka(Regularizer):
    """Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024): each prefix of the dictionary, its
    first m latents alone, reconstructs the input too: sum_m ||x - (f_{1:m} D_{1:m} + b)||^2, so
    early latents learn general features and later ones refine them. Logs each prefix's FVU on
    the test split (``test_fvu_prefix_<m>``)."""

    name = "matryoshka"
    Config = MatryoshkaConfig

    def setup(self, model) -> None:
        from aepipe_plugins.bottlenecks.sae import prefix_sizes

        _need_dictionary(self, model)
        self.sizes = prefix_sizes(self.config.prefixes, self.spec.code_dim)

    def prefix_reconstructions(self, code: torch.Tensor, decoder) -> list[torch.Tensor]:
        return [code[:, :m] @ decoder.weight[:m] + decoder.bias for m in self.sizes]

    def penalty(self, step) -> torch.Tensor:
        recons = self.prefix_reconstructions(step.encoding.code, step.model.decoder)
        return torch.stack([(step.x - r).pow(2).sum(-1).mean() for r in recons]).sum()

    @torch.no_grad()
    def final_metrics(self, model, data) -> dict[str, float]:
        from aepipe.plugin import batches

        err = torch.zeros(len(self.sizes) + 1, dtype=torch.float64)
        total, sum_x, n = 0.0, None, 0
        for xb, yb in batches(data.test, batch_size=4096):
            code = model.encode(xb, yb).code
            recons = [*self.prefix_reconstructions(code, model.decoder), model.decode(code)]
            err += torch.stack([(xb - r).double().pow(2).sum() for r in recons]).cpu()
            total += float(xb.double().pow(2).sum())
            sum_x = xb.double().sum(0) if sum_x is None else sum_x + xb.double().sum(0)
            n += xb.shape[0]
        variance = total - float(sum_x.pow(2).sum()) / n
        sizes = [*self.sizes, self.spec.code_dim]
        return {f"fvu_prefix_{m}": float(e) / variance for m, e in zip(sizes, err)}
