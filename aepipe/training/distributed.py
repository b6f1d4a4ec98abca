"""One model on many processes (``aepipe train --nproc N``, or the same command under a user's
own ``torchrun`` or a cluster launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``).

Every process holds the whole model and the whole dataset (a streamed dataset: reads only its
shard), and trains on its shard of every batch: the epoch's shuffled order is the same on every
process (one seed), each takes rows ``rank::world_size`` of each global batch of
``train.batch_size`` rows, and the training step runs through ``DistributedDataParallel``, which
averages the gradients of the model's parameters over the processes during ``backward()``; the
models therefore stay identical. A regularizer that takes its own optimizer steps (the
adversarial discriminator, and the encoder as its generator) computes its loss on its
process's shard, and each of its steps averages the gradients over the processes first, so it
too stays the same everywhere; its loss sees per-shard batches, as do batch statistics such as
MMD (documented in the plugin guide). Validation runs
on every process (the same numbers: the same early-stopping decision everywhere); rank 0 alone
tracks the run, writes checkpoints and logs the model. gloo on CPU, NCCL on CUDA (one GPU per
process: ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import functools
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from aepipe.errors import ConfigError

TIMEOUT_ENV = "AEPIPE_DIST_TIMEOUT"  # seconds a collective waits for a missing process (default 120)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


SINGLE = World()


def from_environment() -> World:
    """The world this process belongs to, from the launcher's environment (one process: none)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return SINGLE
    try:
        return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    except (KeyError, ValueError):
        raise ConfigError(
            "WORLD_SIZE is set but RANK is not: start several processes with aepipe train --nproc N or torchrun"
        ) from None


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (gloo on CPU, NCCL on CUDA) and return this process's device."""
    import torch.distributed as dist

    if not world.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "120")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return device


def stop(world: World) -> None:
    import torch.distributed as dist

    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard(world: World, idx: torch.Tensor) -> torch.Tensor:
    """This process's rows of a global batch."""
    return idx[world.rank :: world.size] if world.enabled else idx


def _mean_over_processes(world: World, tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the processes (one all-reduce of a flat buffer)."""
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


class _TrainingStep(torch.nn.Module):
    """The model's training step as a module's ``forward``: what DistributedDataParallel wraps."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None):
        return self.model.step(x, y, training=True)


def training_step(world: World, model: Any, device: torch.device, unused: bool = True) -> Callable[..., Any]:
    """``model.step(x, y, training=True)`` as this run takes it: on several processes through
    ``DistributedDataParallel``, which averages the gradients of the model's parameters over the
    processes in buckets while ``backward()`` runs. A regularizer's own optimizers (the
    adversarial discriminator's, and the encoder's in its generator phase) average their
    parameters' gradients before each step; parameters only they train are left out of DDP.
    ``unused``: whether a step leaves some of the model's trained parameters without a gradient
    (the first-step check tells; DDP then looks for them every step)."""
    if not world.enabled:
        return functools.partial(model.step, training=True)
    from torch.nn.parallel import DistributedDataParallel

    for reg in model.regularizers.values():  # a regularizer's own steps (the adversarial discriminator's, the
        for optimizer in reg.optimizers.values():  # encoder's as its generator) see the whole batch's gradient too
            _average_before_step(world, optimizer)
    module = _TrainingStep(model)
    trained = {id(p) for p in model.model_parameters()}
    own = [f"model.{name}" for name, p in model.named_parameters() if id(p) not in trained]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, own)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=unused)


def average_gradients(world: World, params: list[torch.nn.Parameter]) -> None:
    """Replace the gradients of ``params`` by their mean over the processes."""
    grads = [p.grad for p in params if p.grad is not None]  # the same on every process: the same code ran
    if world.enabled and grads:
        _mean_over_processes(world, grads)


def average_buffers(world: World, model: torch.nn.Module) -> None:
    """Average the model's float buffers (batch norm's running statistics, updated from each
    process's shard) over the processes: every process then evaluates, and decides early
    stopping, with the same model."""
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    if world.enabled and buffers:
        with torch.no_grad():
            _mean_over_processes(world, buffers)


def _average_before_step(world: World, optimizer: torch.optim.Optimizer) -> None:
    """Every ``optimizer.step()`` first averages its parameters' gradients over the processes."""

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        average_gradients(world, [p for group in opt.param_groups for p in group["params"]])

    optimizer.register_step_pre_hook(hook)


def any_true(world: World, flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any process (a stop asked for on one stops all together)."""
    if not world.enabled:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sum_(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the processes."""
    if world.enabled:
        import torch.distributed as dist

        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor
