"""The pieces around the loop: loading data, the first-step check, the optimizer, evaluation
and the one read-back of an epoch's metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from aepipe.components import Component
from aepipe.config import Pipeline
from aepipe.data import DataBundle, Feed, Split, batches, prepare
from aepipe.errors import AepipeError, ConfigError, DataError, TrainingError
from aepipe.model import AutoEncoder


def load_data(pipeline: Pipeline, device: torch.device) -> DataBundle:
    choice = pipeline.dataset
    try:
        raw = choice.cls(choice.config).load()
    except AepipeError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"dataset '{choice.name}' failed to load: {type(exc).__name__}: {exc}") from exc
    s = pipeline.settings.data
    return prepare(raw, choice.name, s.val_fraction, s.test_fraction, s.split_seed, device, in_memory=s.in_memory,
                   memory_fraction=s.memory_fraction, feed=Feed.for_device(s.workers, s.prefetch, device))


def _culprit(exc: BaseException) -> str:
    """Name the component in whose code ``exc`` was raised, from the traceback."""
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, Component) and owner.name:
            found = f"{owner.kind} '{owner.name}'"
        tb = tb.tb_next
    return found


def sanity_check(model: AutoEncoder, data: DataBundle, batch_size: int, source: str = "") -> list[str]:
    """One forward, loss and backward pass on one batch, before any expensive work; returns the
    names of the parameters the main optimizer trains that the step left without a gradient."""
    x, y = data.train.head(batch_size)
    try:
        loss, _, _ = model.step(x, y, training=True)
        loss.backward()
        trained = {id(p) for p in model.model_parameters()}
        unused = [name for name, p in model.named_parameters() if id(p) in trained and p.grad is None]
    except AepipeError:
        raise
    except Exception as exc:  # noqa: BLE001
        who = _culprit(exc) or "the model"
        raise ConfigError(
            f"{source}: a first training step failed in {who}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            " (check code_dim, the components' settings and that encoder and decoder fit the data)"
        ) from exc
    finally:
        model.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        raise TrainingError(f"{source}: the loss of the first batch is {loss.item()} before any update")
    return unused


#: torch's optimizers by ``train.optimizer``, and whether torch has a fused kernel for each
OPTIMIZERS = {"adam": ("Adam", True), "adamw": ("AdamW", True), "sgd": ("SGD", True), "rmsprop": ("RMSprop", False)}


def make_optimizer(params: list[torch.nn.Parameter] | list[dict[str, Any]], name: str, lr: float, weight_decay: float,
                   fused: bool = False) -> torch.optim.Optimizer:
    """torch's optimizer ``name`` over ``params`` (parameters, or parameter groups as torch
    takes them: a component's own ``lr`` or ``weight_decay`` stays, the run's fills the rest);
    with ``fused``, its fused kernel (one kernel for every parameter's update: about 1.3x the
    throughput of the default on 2 CPU cores for an MLP autoencoder) where torch has one for
    these parameters' device and dtype."""
    cls_name, has_fused = OPTIMIZERS[name]
    cls = getattr(torch.optim, cls_name)
    kwargs = {"lr": lr, "weight_decay": weight_decay}
    groups = list(params)
    flat = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    if fused and has_fused and flat and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in flat):
        kwargs["fused"] = True
    return cls(groups, **kwargs)


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
            for part in model.components().values():
                method = getattr(part, "epoch_metrics" if when == "epoch" else "final_metrics", None)
                if method is not None:
                    out.update(method(model, data) or {})
    finally:
        model.train(was)
    return out


def fit_sampler(model: AutoEncoder, sampler: Any, split: Any) -> dict[str, float]:
    """Fit ``sampler`` on the codes of ``split`` (the training split) and mark it fitted."""
    was = model.training
    model.eval()
    try:
        metrics = sampler.fit(model, split) or {}
        sampler.fitted.fill_(True)
    finally:
        model.train(was)
    return {k: float(v) for k, v in metrics.items()}


def evaluate(model: AutoEncoder, x: Split | torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1024) -> dict[str, float]:
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
