"""The ``planar`` and ``iaf`` bottlenecks: a diagonal Gaussian q0(z0 | x) followed by K
invertible steps z_k = f_k(z_{k-1}), so that

    log q(z_K | x) = log q0(z0 | x) - sum_k log |det df_k / dz_{k-1}|

is known for every draw (``Code.log_q``): the KL regularizer and the importance-weighted bound
use it by Monte Carlo. The deterministic code is the flow applied to the mean of q0."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from aepipe.plugin import Code, DiagNormal, Encoding, ModelSpec, require
from aepipe_plugins.bottlenecks.basic import Gaussian, GaussianConfig

#: added to the IAF gate's pre-activation so that each step starts near the identity
#: (sigma = sigmoid(s + 2) ~ 0.88; Kingma et al. 2016 initialise the gate towards 1)
GATE_BIAS = 2.0


class _Flowed(Gaussian):
    """A Gaussian posterior followed by a flow: subclasses give ``flow(z, encoding_rest)`` ->
    ``(z_K, sum of log-determinants)`` for z of shape (S, n, d)."""

    what = ("mean", "sample")

    def split(self, encoding: Encoding) -> tuple[DiagNormal, torch.Tensor]:
        d = self.spec.code_dim
        q0 = self.posterior(Encoding(encoding.code[:, : 2 * d]))
        return q0, encoding.code[:, 2 * d:]

    def flow(self, z: torch.Tensor, rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        q0, rest = self.split(encoding)
        n = q0.mean.shape[0]
        z0 = q0.rsample((samples,))  # (L, n, d)
        # the mean and the L draws go through the flow together: row 0 is the deterministic code
        zk, log_det = self.flow(torch.cat([q0.mean.unsqueeze(0), z0]), rest)
        log_q = q0.log_prob(z0) - log_det[1:]
        code, z = zk[0], zk[1:].reshape(samples * n, -1)
        return Code(code, z, samples, dist=None, log_q=log_q, outputs={"mean": code, "sample": z[:n]})


class PlanarConfig(GaussianConfig):
    """``flows``: K planar steps after the Gaussian posterior; each step's u, w, b come from
    the encoder (amortized), so the encoder gives ``2 * code_dim + flows * (2 * code_dim + 1)``
    features. ``min_std`` and ``logvar_range`` as for the gaussian bottleneck."""

    flows: int = Field(
        4, ge=1, le=64, description="K, the planar steps (amortized: their parameters come from the encoder)"
    )


def planar_step(
    z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """f(z) = z + u_hat tanh(w.z + b) (Rezende & Mohamed 2015) and log |det df/dz|, for z of
    shape (S, n, d) and per-input u, w (n, d), b (n,). u_hat = u + (m(w.u) - w.u) w / |w|^2 with
    m(a) = -1 + softplus(a) makes w.u_hat > -1, so that f is invertible."""
    wu = (w * u).sum(-1, keepdim=True)
    u_hat = u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(1e-12)
    h = torch.tanh((z * w).sum(-1) + b)  # (S, n)
    out = z + u_hat * h.unsqueeze(-1)
    # det(I + u_hat psi^T) = 1 + psi.u_hat with psi = (1 - h^2) w
    psi_u = (1 - h * h) * (w * u_hat).sum(-1)
    return out, torch.log1p(psi_u.clamp_min(-1 + 1e-12))


class Planar(_Flowed):
    """q0(z0 | x) = N(mu, diag sigma^2), then K planar steps whose parameters the encoder gives
    for each input (amortized, as Rezende & Mohamed 2015): ``features`` = 2 d + K (2 d + 1).
    ``log_q`` subtracts the steps' log-determinants; the KL regularizer uses it by Monte Carlo."""

    name = "planar"
    Config = PlanarConfig

    @classmethod
    def features(cls, config: PlanarConfig, spec: ModelSpec) -> int:
        d = spec.code_dim
        return 2 * d + config.flows * (2 * d + 1)

    def flow(self, z: torch.Tensor, rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.spec.code_dim
        params = rest.reshape(rest.shape[0], self.config.flows, 2 * d + 1)
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for k in range(self.config.flows):
            u, w, b = params[:, k, :d], params[:, k, d: 2 * d], params[:, k, 2 * d]
            z, step = planar_step(z, u, w, b)
            log_det = log_det + step
        return z, log_det


class IAFConfig(GaussianConfig):
    """``flows``: K inverse autoregressive steps after the Gaussian posterior, each a MADE
    (``hidden`` units) giving (m, s) with z <- sigmoid(s) z + (1 - sigmoid(s)) m, the variable
    order reversed between steps; ``context``: width of a context vector h that the encoder
    gives besides mu and log sigma^2 (its features are ``2 * code_dim + context``) and that every
    MADE sees (0: none)."""

    flows: int = Field(2, ge=1, le=64, description="K, the inverse autoregressive steps")
    hidden: list[PositiveInt] = Field(
        [64], min_length=1, max_length=8, description="hidden units of each step's masked MLP (MADE)"
    )
    context: int = Field(
        16, ge=0, le=100_000, description="width of the context h the encoder gives every step (0: none)"
    )


class IAFStep(nn.Module):
    """One inverse autoregressive step: (m_i, s_i) depend on z_j for j before i in ``order``
    and on the whole context, through a masked MLP (zuko's ``MaskedMLP``)."""

    def __init__(self, features: int, context: int, hidden: list[int], order: torch.Tensor):
        from zuko.nn import MaskedMLP

        super().__init__()
        adjacency = order[:, None] > order[None, :]  # output i sees input j when j comes first
        adjacency = torch.cat([adjacency, torch.ones(features, context, dtype=torch.bool)], dim=1)
        self.made = MaskedMLP(adjacency.repeat_interleave(2, dim=0), hidden_features=list(hidden), activation=nn.ELU)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([z, h.expand(*z.shape[:-1], h.shape[-1])], dim=-1) if h.shape[-1] else z
        m, s = self.made(x).unflatten(-1, (z.shape[-1], 2)).unbind(-1)
        s = s + GATE_BIAS
        gate = torch.sigmoid(s)
        return gate * z + (1 - gate) * m, F.logsigmoid(s).sum(-1)


class IAF(_Flowed):
    """q0(z0 | x) = N(mu, diag sigma^2), then K inverse autoregressive steps (Kingma et al.
    2016) with the encoder's context h: ``features`` = 2 d + ``context``. Each step's Jacobian
    is triangular, so log |det| = sum log sigmoid(s); ``log_q`` subtracts them."""

    name = "iaf"
    Config = IAFConfig

    def __init__(self, config: IAFConfig, spec: ModelSpec):
        super().__init__(config, spec)
        d = spec.code_dim
        require(d > 1 or config.context > 0, "an IAF step on a 1-D code without context is a constant map: "
                                             "set context >= 1 or code_dim >= 2")
        forward_order = torch.arange(d)
        self.steps = nn.ModuleList(
            IAFStep(d, config.context, config.hidden, forward_order if k % 2 == 0 else forward_order.flip(0))
            for k in range(config.flows)
        )

    @classmethod
    def features(cls, config: IAFConfig, spec: ModelSpec) -> int:
        return 2 * spec.code_dim + config.context

    def flow(self, z: torch.Tensor, rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for step in self.steps:
            z, part = step(z, rest)
            log_det = log_det + part
        return z, log_det
