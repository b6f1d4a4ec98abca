"""The contractive penalty and the encoder Jacobian's Frobenius norm."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.func import jacrev, jvp, vmap

from aepipe.plugin import ComponentConfig, Regularizer


def jacobian_frobenius_sq(encoder, x: torch.Tensor, y_onehot: torch.Tensor | None = None,
                          method: str = "auto", projections: int = 1) -> torch.Tensor:
    """||dh/dx||_F^2 per example, shape ``(n,)``, of the encoder's code h(x).

    ``closed-form``: the encoder's own formula (a one-layer sigmoid encoder has one);
    ``autograd``: the exact Jacobian, vectorised over the batch with ``torch.func``;
    ``projection``: the unbiased estimate mean_p ||J v_p||^2, v_p ~ N(0, I), by forward-mode
    Jacobian-vector products; ``auto``: closed form where the encoder has one, else autograd.
    """
    with torch.enable_grad():
        if method in ("auto", "closed-form"):
            closed = getattr(encoder, "jacobian_frobenius_sq", None)
            value = closed(x, y_onehot) if closed is not None else None
            if value is not None:
                return value
            if method == "closed-form":
                raise ValueError(f"encoder '{encoder.name}' has no closed-form Jacobian")
        if method in ("auto", "autograd"):
            def code(xi, yi):
                return encoder(xi[None], None if yi is None else yi[None]).code[0]

            jac = vmap(jacrev(code), in_dims=(0, None if y_onehot is None else 0), randomness="different")(x, y_onehot)
            return jac.pow(2).sum(dim=(-2, -1))
        if method == "projection":
            def batch_code(xs):
                return encoder(xs, y_onehot).code

            total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
            for _ in range(projections):
                v = torch.randn_like(x)
                _, jv = jvp(batch_code, (x,), (v,))  # rows are independent: J_i v_i per example
                total = total + jv.pow(2).sum(-1)
            return total / projections
    raise ValueError(f"unknown method {method!r}")


class ContractiveConfig(ComponentConfig):
    """``lam``: lambda, >= 0; ``method``: auto, closed-form, autograd or projection;
    ``projections``: random projections per step for ``projection``."""

    lam: float = Field(0.1, ge=0.0)
    method: Literal["auto", "closed-form", "autograd", "projection"] = "auto"
    projections: int = Field(1, ge=1, le=1000)


class Contractive(Regularizer):
    """lambda * ||dh/dx||_F^2, averaged over the batch."""

    name = "contractive"
    Config = ContractiveConfig
    weight_setting = "lam"

    def setup(self, model) -> None:
        from aepipe.plugin import ConfigError

        if self.config.method == "closed-form" and getattr(model.encoder, "jacobian_frobenius_sq", None) is None:
            raise ConfigError(f"contractive: method 'closed-form' needs an encoder with one; '{model.encoder.name}' "
                              "has none (use autograd or projection)")

    def _norm(self, encoder, x, y_onehot, method=None) -> torch.Tensor:
        return jacobian_frobenius_sq(encoder, x, y_onehot, method or self.config.method, self.config.projections)

    def penalty(self, step) -> torch.Tensor:
        return self.config.lam * self._norm(step.model.encoder, step.x_tilde, step.y_onehot).mean()

    def evaluate(self, step) -> dict[str, torch.Tensor]:
        method = "auto" if self.config.method == "projection" else self.config.method
        return {"jacobian_fro_sq": self._norm(step.model.encoder, step.x, step.y_onehot, method).mean().detach()}
