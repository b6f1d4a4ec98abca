"""One optimizer step of a model, as a run takes it: what the training epoch, the conformance
suite (:mod:`aepipe.testing`) and tests all call, so a step is written once."""

from __future__ import annotations

from typing import Any

import torch


def optimizer_step(model: Any, optimizer: torch.optim.Optimizer, loss: torch.Tensor, step: Any,
                   max_grad_norm: float = 0.0,
                   params: list[torch.nn.Parameter] | None = None, after: list[Any] | None = None,
                   owned: list[Any] | None = None) -> dict[str, torch.Tensor]:
    """Train ``model`` on ``loss`` (the first result of ``model.step``, whose :class:`Step` is
    ``step``): clear the gradients, backpropagate (on several processes DistributedDataParallel
    averages the gradients here), clip them to ``max_grad_norm`` (0: not clipped), take the
    optimizer's step, let the components that update state after a step do so (``after``:
    ``model.after_step_parts()``) and each regularizer that owns parameters take its own steps
    (``owned``). ``params``, ``after`` and ``owned`` default to the model's own; a loop over many
    steps passes them once computed. Returns the regularizers' own metrics (their ``update``)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params if params is not None else model.model_parameters(), max_grad_norm)
    optimizer.step()
    after = model.after_step_parts() if after is None else after
    if after:
        with torch.no_grad():
            for part in after:
                part.after_step()
    values: dict[str, torch.Tensor] = {}
    for reg in owned_regularizers(model) if owned is None else owned:
        values.update(reg.update(step))  # on several processes its optimizers average gradients first
    return values


def owned_regularizers(model: Any) -> list[Any]:
    """The regularizers that take their own optimizer steps (``owns_parameters``)."""
    return [r for r in model.regularizers.values() if r.owns_parameters]
