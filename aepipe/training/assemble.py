"""A run's parts, assembled once: the resolved pipeline and its TOML, the device and the
processes, the data, the model, its optimizer and schedule, and the training step.

:func:`assemble` is the one place a run is put together, in this order:

1. the device (on several processes: join their group; each takes its own GPU);
2. the seed (``train.seed``), set once;
3. the data, loaded and split (or taken from a study worker's cache);
4. the model sized on torch's meta device (components constructed, no memory allocated, the
   random generators untouched, no ``setup``): a model that would not fit the device is refused
   here, before any real allocation;
5. the model built once, for real: each component constructed and its ``setup`` run once, then
   moved to the device;
6. the optimizer over its parameter groups, and the learning-rate schedule;
7. the first-step check on that model (one forward, loss and backward pass), after which the
   model, the optimizers and the random generators are restored: the run trains bit for bit as
   one without the check would;
8. cuDNN autotuning and ``torch.compile`` where asked; on several processes, each process's own
   noise, and the step through DistributedDataParallel;
9. the pipeline serialised to TOML once: the checkpoint's copy, the run's ``pipeline.toml``
   artifact and the model folder's ``pipeline.toml`` are this text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from aepipe.config import Pipeline
from aepipe.data import DataBundle
from aepipe.model import AutoEncoder, build_model, check_model_fits, initialize_model
from aepipe.training import distributed
from aepipe.training.device import autocast, check_cuda_graphs, prepare_for_device, seed_everything, select_device
from aepipe.training.schedules import LRSchedule, steps_per_epoch
from aepipe.training.setup import first_step_check, load_data, make_optimizer


@dataclass
class RunParts:
    """What one run trains with, assembled once by :func:`assemble`."""

    pipeline: Pipeline
    toml: str  #: the resolved pipeline as TOML, serialised once (checkpoint, run artifact, model folder)
    world: distributed.World
    device: torch.device
    data: DataBundle
    model: AutoEncoder
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    #: ``(x, y) -> model.step(x, y, training=True)``, through DistributedDataParallel on several processes
    train_step: Callable[..., Any]
    amp: Any  #: the forward pass's autocast context
    unused: list[str]  #: trained parameters a step leaves without a gradient (the first-step check's finding)


def assemble(pipeline: Pipeline, device: str | None = None, world: distributed.World = distributed.SINGLE,
             load: Callable[[Pipeline, torch.device], DataBundle] = load_data, resumed_epoch: int = 0,
             fresh: bool = True) -> RunParts:
    """The parts of a run of ``pipeline`` on ``device`` (None: ``train.device``), on this
    process of ``world``, with its data from ``load``; ``resumed_epoch``: the epochs a resumed
    run has done (on several processes each one's noise depends on it). A resumed run loads its
    checkpoint's state into the parts afterwards; only a ``fresh`` (new) run's components
    :meth:`initialize` themselves on its training data."""
    s = pipeline.settings
    where = distributed.start(world, select_device(device or s.train.device))
    check_cuda_graphs(pipeline, where, world.enabled)  # refused before any data is read
    seed_everything(s.train.seed)
    data = load(pipeline, where)
    check_model_fits(pipeline, data, where)  # on the meta device: refused before any real allocation
    model = build_model(pipeline, data).to(where)  # the one build: every component's setup() runs once
    if fresh:  # data-dependent initialisation: never on a resumed run, whose weights are loaded
        initialize_model(model, data, seed=s.train.seed)
    optimizer = make_optimizer(model.parameter_groups(), s.train.optimizer, s.train.lr, s.train.weight_decay,
                               s.train.fused)
    schedule = LRSchedule(optimizer, s.train.lr_schedule, s.train.lr, s.train.epochs,
                          steps_per_epoch(len(data.train), s.train.batch_size))
    unused = first_step_check(model, optimizer, data, s.train.batch_size, pipeline.source)
    model = prepare_for_device(model, where, s.train.compile)
    if world.enabled:  # the same weights on every process, then each its own noise
        torch.manual_seed(s.train.seed + 7919 * world.rank + 104_729 * resumed_epoch)
    # DistributedDataParallel joins every process here
    train_step = distributed.training_step(world, model, where, bool(unused))
    return RunParts(pipeline, pipeline.to_toml(), world, where, data, model, optimizer, schedule, train_step,
                    autocast(where, s.train.amp), unused)
