"""The ``flow`` sampler: a masked autoregressive flow (zuko's ``MAF``) fitted on the training
codes by maximum likelihood."""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt

from aepipe.plugin import ComponentConfig, ConfigError, ModelSpec, Sampler, code_tensor


class FlowSamplerConfig(ComponentConfig):
    """``transforms``: autoregressive transforms of the MAF (variable order reversed between
    them), each a masked MLP of ``hidden`` units; fitted with Adam (``lr``, ``batch_size``) for
    ``epochs`` passes over the standardized training codes (at most ``max_codes`` of them, a
    random subset drawn with ``seed``, which also orders the batches)."""

    transforms: int = Field(3, ge=1, le=32, description="autoregressive transforms of the MAF")
    hidden: list[PositiveInt] = Field(
        [64, 64], min_length=1, max_length=8, description="hidden units of each transform's masked MLP"
    )
    epochs: int = Field(100, ge=1, le=10_000, description="passes of Adam over the training codes")
    batch_size: int = Field(256, ge=1, description="codes per Adam step")
    lr: float = Field(1e-3, gt=0.0, description="Adam's learning rate")
    seed: int = Field(0, ge=0, description="seed of the subset and of the batch order")
    max_codes: int = Field(50_000, ge=2, description="at most this many training codes (a random subset)")


class FlowSampler(Sampler):
    """A masked autoregressive flow (Papamakarios et al. 2017) fitted on the standardized
    training codes with its own Adam; ``sample`` inverts it. Its weights and the codes' mean
    and scale are its state (saved with the model); the model's optimizer never sees them."""

    name = "flow"
    Config = FlowSamplerConfig
    #: the conformance suite checks the contract, not the fit: a short one
    conformance = {"model": {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]},
                             "sampler": {"name": "flow", "epochs": 10, "max_codes": 256}}}

    def __init__(self, config: FlowSamplerConfig, spec: ModelSpec):
        from zuko.flows import MAF

        super().__init__(config, spec)
        d = spec.code_dim
        self.flow = MAF(d, 0, transforms=config.transforms, hidden_features=list(config.hidden))
        self.register_buffer("loc", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))

    def setup(self, model) -> None:
        if model.spec.conditional:
            raise ConfigError(
                "sampler 'flow' fits codes without their labels; a conditional model samples through 'prior'"
            )
        if getattr(model.bottleneck, "discrete", False):
            raise ConfigError(
                f"sampler 'flow' models continuous codes; bottleneck '{model.bottleneck.name}' gives discrete ones"
            )

    def fit(self, model, split) -> dict[str, float]:
        c = self.config
        codes = code_tensor(model, split).to(self.loc.dtype)
        gen = torch.Generator().manual_seed(c.seed)
        if len(codes) > c.max_codes:
            codes = codes[torch.randperm(len(codes), generator=gen)[: c.max_codes].to(codes.device)]
        if len(codes) < 2:
            raise ConfigError(f"sampler 'flow': {len(codes)} training codes are too few to fit a flow")
        self.loc.copy_(codes.mean(0))
        self.scale.copy_(codes.std(0).clamp_min(1e-6))
        x = (codes - self.loc) / self.scale
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=c.lr)
        with torch.enable_grad():
            self.flow.train()
            for _ in range(c.epochs):
                order = torch.randperm(len(x), generator=gen).to(x.device)
                for start in range(0, len(x), c.batch_size):
                    loss = -self.flow().log_prob(x[order[start: start + c.batch_size]]).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        with torch.no_grad():
            log_lik = self.flow().log_prob(x).mean() - self.scale.log().sum()  # in the codes' own units
        return {"flow_log_likelihood": float(log_lik)}

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.flow().sample((n,)) * self.scale + self.loc
