"""Measurements of a model in memory that a run logs: a split's losses (the one read-back of an
epoch's metrics), the components' own metrics, codes, prior samples and a fitted sampler."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from aepipe.data import Split, batches
from aepipe.errors import TrainingError
from aepipe.model import AutoEncoder


@torch.no_grad()
def evaluate_tensors(model: AutoEncoder, x: Split | torch.Tensor, y: torch.Tensor | None = None,
                     batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """Loss, its terms (every regularizer at its full weight), the per-element squared error of
    the reconstruction and every regularizer's own metrics, averaged over a split (or tensors
    ``x`` and ``y``): 0-d tensors on the device, not yet read back."""
    was_training = model.training
    model.eval()
    keys: list[str] | None = None
    total: torch.Tensor | None = None
    n = 0
    for xb, yb in batches(x, y, batch_size):
        n += xb.shape[0]
        loss, terms, step = model.step(xb, yb, training=False)
        if not step.encoding.stochastic and step.z.shape[0] == xb.shape[0] and step.z is step.encoding.code:
            out = step.output  # a deterministic code: the decoder already saw it
        else:
            out = model.decoder(step.encoding.code, step.y_onehot)
        values = {"loss": loss, **terms, "mse": (model.likelihood.mean(out) - xb).pow(2).mean()}
        for reg in model.regularizers.values():
            values.update(reg.evaluate(step))
        if keys is None:
            keys = list(values)
        vec = torch.stack([values[k].detach().float().reshape(()) for k in keys]) * xb.shape[0]
        total = vec if total is None else total + vec
    model.train(was_training)
    assert keys is not None and total is not None
    return dict(zip(keys, (total / n).unbind()))


def component_metrics(model: AutoEncoder, when: str, data: Any) -> dict[str, Any]:
    """Each of the run's own components' metrics: ``epoch`` (``epoch_metrics(model, split)``
    on the validation split) or ``final`` (``final_metrics(model, data)``, the whole bundle).
    Only the components of the model are asked: no run logs another plugin's metrics."""
    was = model.training
    model.eval()
    out: dict[str, Any] = {}
    try:
        with torch.no_grad():
            for place, part in model.components().items():
                method = getattr(part, "epoch_metrics" if when == "epoch" else "final_metrics", None)
                if method is not None:
                    metrics = method(model, data) or {}
                    _check_names(metrics, "val_" if when == "epoch" else "test_", place, part, method.__name__)
                    out.update(metrics)
    finally:
        model.train(was)
    return out


def _check_names(metrics: dict[str, Any], prefix: str, place: str, part: Any, method: str) -> None:
    """A component's metric names are ones a tracking store takes: otherwise one error naming
    the component, its module (its plugin's) and the name, before anything is logged."""
    from aepipe.errors import PluginError
    from aepipe.plugins import bad_metric_name

    for name in metrics:
        why = bad_metric_name(prefix + name if isinstance(name, str) else name)
        if why is not None:
            module = type(part).__module__
            raise PluginError(
                f"the {place} '{getattr(part, 'name', '?')}' (from {module}) returned the metric {name!r} "
                f"from {method}, a name a tracking store refuses: {why}",
                plugin=module,
            )


def fit_on_codes(model: AutoEncoder, sampler: Any, split: Any) -> dict[str, float]:
    """Fit ``sampler`` on the codes of ``split`` (the training split) and mark it fitted."""
    was = model.training
    model.eval()
    try:
        metrics = sampler.fit(model, split) or {}
        sampler.fitted.fill_(True)
    finally:
        model.train(was)
    return {k: float(v) for k, v in metrics.items()}


def split_metrics(
    model: AutoEncoder, x: Split | torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1024
) -> dict[str, float]:
    """:func:`evaluate_tensors`, read back as floats."""
    return read_back(evaluate_tensors(model, x, y, batch_size))


def read_back(*parts: dict[str, Any], prefixes: tuple[str, ...] = ()) -> dict[str, float]:
    """Merge metric dicts (0-d tensors or floats) into floats with one device read-back; part
    ``i`` gets ``prefixes[i]`` before its names."""
    names: list[str] = []
    tensors: list[torch.Tensor] = []
    out: dict[str, float] = {}
    for i, part in enumerate(parts):
        prefix = prefixes[i] if i < len(prefixes) else ""
        for key, value in part.items():
            if isinstance(value, torch.Tensor):
                names.append(prefix + key)
                tensors.append(value.detach().float().reshape(()))
            else:
                out[prefix + key] = float(value)
    if tensors:
        out.update(zip(names, torch.stack([t.to(tensors[0].device) for t in tensors]).tolist()))
    return out


def check_finite(metrics: dict[str, float], epoch: int, source: str) -> None:
    """A diverging loss ends the run with one line naming the epoch."""
    bad = [k for k, v in metrics.items() if not math.isfinite(v) and not k.startswith("val_")]
    if bad:
        raise TrainingError(f"{source}: training diverged at epoch {epoch}: {bad[0]} = {metrics[bad[0]]}"
                            " (lower train.lr, or set train.max_grad_norm)")
    if not math.isfinite(metrics["val_loss"]):
        raise TrainingError(f"{source}: validation loss is {metrics['val_loss']} at epoch {epoch}")


def codes(model: AutoEncoder, x: Split | torch.Tensor, y: torch.Tensor | None = None, batch: int = 4096) -> np.ndarray:
    """The codes of a split (or of tensors ``x`` and ``y``), on the CPU."""
    return code_tensor(model, x, y, batch=batch).cpu().numpy()


@torch.no_grad()
def code_tensor(model: AutoEncoder, x: Split | torch.Tensor, y: torch.Tensor | None = None, what: str = "code",
                batch: int = 4096) -> torch.Tensor:
    """``encode --what`` of a split (or of tensors ``x`` and ``y``) as one tensor on the model's
    device, in evaluation mode: what samplers fit on."""
    was = model.training
    model.eval()
    try:
        return torch.cat([model.represent(xb, yb, what) for xb, yb in batches(x, y, batch)])
    finally:
        model.train(was)


def prior_samples(model: AutoEncoder, per_row: int = 10) -> tuple[np.ndarray, list[str] | None]:
    """Decoded prior samples: 4 rows of 10, or one row per class for conditional models."""
    device = next(model.parameters()).device
    if model.spec.conditional:
        classes = model.spec.n_classes
        y = torch.arange(classes, device=device).repeat_interleave(per_row)
        return model.sample(len(y), y).cpu().numpy(), [f"class {c}" for c in range(classes)]
    return model.sample(4 * per_row).cpu().numpy(), None
