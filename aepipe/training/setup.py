"""What a run is set up with before its first epoch: its data loaded and split, the first-step
check of the model (on the run's own model, restored afterwards), and the optimizer."""

from __future__ import annotations

from typing import Any

import torch

from aepipe.components import Component
from aepipe.config import Pipeline
from aepipe.data import DataBundle, Feed, prepare
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
            f"{source}: a first training step failed in {who}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''} (check code_dim, the components' settings and that "
            "encoder and decoder fit the data)"
        ) from exc
    finally:
        model.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        raise TrainingError(f"{source}: the loss of the first batch is {loss.item()} before any update")
    return unused


def first_step_check(model: AutoEncoder, optimizer: torch.optim.Optimizer, data: DataBundle, batch_size: int,
                     source: str = "") -> list[str]:
    """:func:`sanity_check` on the run's own model, after which the model's parameters and
    buffers (batch norm's running statistics, a codebook set from its first batch...), its
    optimizers' state (``optimizer`` and the regularizers' own) and the random generators (torch's
    on the CPU and on the model's CUDA device, NumPy's) are as they were: the run trains as if the
    check had not run, bit for bit. The copy of the weights it keeps while it runs takes less than
    the optimizer's moments will (they do not exist before the first step)."""
    import copy

    import numpy as np

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    optimizers = [optimizer, *(o for r in model.regularizers.values() for o in getattr(r, "optimizers", {}).values())]
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    states = [copy.deepcopy(o.state_dict()) for o in optimizers]
    drawn = np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        try:
            return sanity_check(model, data, batch_size, source)
        finally:
            model.load_state_dict(weights)
            for o, state in zip(optimizers, states):
                o.load_state_dict(state)
            np.random.set_state(drawn)


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
