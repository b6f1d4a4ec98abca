"""The ``index-ar`` sampler: an autoregressive prior over a discrete code's indices.

p(i_1, ..., i_G) = prod_g p(i_g | i_<g), each factor a categorical over the K codewords, from
one masked network (MADE, Germain et al. 2015): the one-hot indices go in, G x K logits come
out, and the masks let the logits of position g see positions before g only. Position 1 sees
nothing but its bias, which starts (and, being the maximum-likelihood answer, stays) at the log
of the training codes' codeword frequencies: with one group the sampler is the empirical
distribution of codewords. Draws are decoded through the bottleneck's ``from_indices``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from aepipe.plugin import ComponentConfig, ConfigError, ModelSpec, Sampler


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer)."""

    def __init__(self, mask: torch.Tensor, bias: bool = True):
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IndexARConfig(ComponentConfig):
    """``hidden``: width of the masked network's hidden layer; ``steps`` of Adam at ``lr`` on
    minibatches of ``batch_size`` training codes (drawn with ``seed``)."""

    hidden: int = Field(256, ge=1, le=65_536, description="width of the masked network's hidden layer")
    steps: int = Field(1500, ge=0, le=1_000_000, description="Adam steps of the fit")
    lr: float = Field(2e-3, gt=0.0, description="Adam's learning rate")
    batch_size: int = Field(256, ge=1, description="training codes per step")
    seed: int = Field(0, ge=0, description="seed of the minibatches' draw")


class IndexAutoregressive(Sampler):
    """An autoregressive prior over the codeword indices of a discrete bottleneck (a masked
    network, MADE), fitted on the training codes; draws are decoded through
    ``bottleneck.from_indices``. With one group, the empirical distribution of codewords."""

    name = "index-ar"
    draws = "code"  # the bottleneck's codes of drawn indices
    Config = IndexARConfig
    #: the conformance suite's model around it: a discrete code
    conformance = {"model": {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]},
                             "bottleneck": {"name": "quantized", "codebook_size": 8, "groups": 2, "ema": True},
                             "sampler": {"name": "index-ar", "hidden": 32, "steps": 50}}}

    def __init__(self, config: IndexARConfig, spec: ModelSpec):
        super().__init__(config, spec)
        self.positions = self.choices = 0  # known once the model is (setup)

    def setup(self, model) -> None:
        bottleneck = model.bottleneck
        if not getattr(bottleneck, "discrete", False):
            which = f"bottleneck '{bottleneck.name}'" if bottleneck.name else "a model without a bottleneck"
            raise ConfigError(f"needs a discrete code (codeword indices); {which} gives continuous codes: "
                              "use [model.bottleneck] name = \"quantized\"")
        if model.spec.conditional:
            raise ConfigError(
                "models the indices without their labels; it takes an unconditional model (model.conditional = false)"
            )
        self._model = [model]  # a plain reference: not a submodule of the sampler
        g, k = bottleneck.index_shape()
        if (g, k) == (self.positions, self.choices):
            return
        self.positions, self.choices = g, k
        h = self.config.hidden
        position = torch.arange(g).repeat_interleave(k) + 1  # 1-based position of every input and output unit
        degree = torch.arange(h) % max(g - 1, 1) + 1  # each hidden unit sees positions 1..degree
        self.inner = MaskedLinear((position[None, :] <= degree[:, None]).float())
        self.outer = MaskedLinear((degree[None, :] < position[:, None]).float())
        self.direct = MaskedLinear((position[None, :] < position[:, None]).float(), bias=False)
        with torch.no_grad():
            self.outer.weight.mul_(0.1)
        device = next((t.device for t in [*bottleneck.parameters(), *bottleneck.buffers()]), None)
        if device is not None:
            self.to(device)

    def logits(self, indices: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, G, K)`` of every position given the positions before it."""
        x = F.one_hot(indices, self.choices).reshape(indices.shape[0], -1).to(self.direct.weight.dtype)
        out = self.outer(torch.relu(self.inner(x))) + self.direct(x)
        return out.reshape(-1, self.positions, self.choices)

    def nll(self, indices: torch.Tensor) -> torch.Tensor:
        """-log p of each row of ``indices``, nats (summed over positions)."""
        logits = self.logits(indices)
        return (
            F.cross_entropy(logits.reshape(-1, self.choices), indices.reshape(-1), reduction="none")
            .reshape(indices.shape)
            .sum(1)
        )

    def fit(self, model, split) -> dict[str, float]:
        from aepipe.plugin import code_tensor

        self.setup(model)
        c = self.config
        indices = code_tensor(model, split, what="indices").long().to(self.direct.weight.device)
        n = len(indices)
        if n == 0:
            raise ConfigError("sampler 'index-ar': the training split has no codes to fit")
        counts = F.one_hot(indices, self.choices).sum(0).to(self.direct.weight.dtype)  # (G, K)
        frequency = (counts + 1e-3) / (counts + 1e-3).sum(1, keepdim=True)
        with torch.no_grad():
            self.outer.bias.copy_(frequency.log().reshape(-1))
        independent = -(counts * frequency.log()).sum() / n  # the positions' empirical marginals, independent
        generator = torch.Generator(device="cpu").manual_seed(c.seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=c.lr)
        with torch.enable_grad():
            for _ in range(c.steps):
                rows = torch.randint(n, (min(c.batch_size, n),), generator=generator).to(indices.device)
                loss = self.nll(indices[rows]).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            self.outer.bias[: self.choices].copy_(frequency[0].log())  # position 1: exactly the codewords' frequencies
            fitted = torch.cat([self.nll(part) for part in indices.split(4096)]).mean()
        return {
            "index_nll": float(fitted),
            "independent_nll": float(independent),
            "uniform_nll": self.positions * math.log(self.choices),
        }

    @torch.no_grad()
    def draw_indices(self, n: int) -> torch.Tensor:
        """``n`` draws of the indices ``(n, G)``, one position after another."""
        indices = torch.zeros(n, self.positions, dtype=torch.long, device=self.direct.weight.device)
        for g in range(self.positions):
            probs = torch.softmax(self.logits(indices)[:, g].float(), dim=-1)
            indices[:, g] = torch.multinomial(probs, 1).squeeze(1)
        return indices

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        return self._model[0].bottleneck.from_indices(self.draw_indices(n))
