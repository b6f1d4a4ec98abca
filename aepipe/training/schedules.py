"""Schedules over epochs: the learning rate (torch's own schedulers, with an optional linear
warm-up) and each regularizer's weight (a linear warm-up from 0; for ``kl``, KL annealing).

Both act on training only: validation and test losses always use every regularizer's full
weight, so they compare across epochs and runs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import lr_scheduler

from aepipe.config import LRScheduleSettings


class LRSchedule:
    """The learning-rate schedule of ``[train.lr_schedule]``: stepped once per epoch (after
    validation; ``plateau`` watches ``val_loss``), or once per batch for ``onecycle``."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, s: LRScheduleSettings, lr: float, epochs: int, steps_per_epoch: int
    ):
        self.optimizer = optimizer
        self.per_batch = s.name == "onecycle"
        self.plateau: lr_scheduler.ReduceLROnPlateau | None = None
        self.warmup = s.warmup_epochs
        main: Any = None
        after = max(1, epochs - s.warmup_epochs)
        if s.name == "cosine":
            main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=after, eta_min=s.min_lr)
        elif s.name == "step":
            main = lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma or 0.1)
        elif s.name == "exponential":
            main = lr_scheduler.ExponentialLR(optimizer, gamma=s.gamma or 0.95)
        elif s.name == "onecycle":
            main = lr_scheduler.OneCycleLR(optimizer, max_lr=s.max_lr or 10 * lr, total_steps=epochs * steps_per_epoch,
                                           pct_start=s.pct_start)
        elif s.name == "plateau":
            self.plateau = lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=s.factor, patience=s.patience, min_lr=s.min_lr
            )
        warm = (
            lr_scheduler.LinearLR(optimizer, start_factor=1 / (s.warmup_epochs + 1), total_iters=s.warmup_epochs)
            if s.warmup_epochs
            else None
        )
        if warm is not None and main is not None:
            self.scheduler: Any = lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[s.warmup_epochs])
        else:
            self.scheduler = warm if warm is not None else main

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def after_batch(self) -> None:
        if self.per_batch:
            self.scheduler.step()

    def after_epoch(self, epoch: int, val_loss: float) -> None:
        if self.per_batch:
            return
        if self.plateau is not None and epoch >= self.warmup:
            self.plateau.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "plateau": None if self.plateau is None else self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """A regularizer's share of its full weight at ``epoch`` (from 1): 0 at the first epoch,
    rising linearly to 1 at epoch ``warmup_epochs + 1``."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch - 1) / warmup_epochs)


def regularizer_weights(model: Any, warmups: dict[str, int], epoch: int) -> dict[str, float]:
    """Set each regularizer's training weight for ``epoch`` on ``model``; returns the metrics
    ``weight.<key>``: the share times the regularizer's own weight setting, where it names one."""
    logged = {}
    for key, reg in model.regularizers.items():
        factor = warmup_factor(epoch, warmups.get(key, 0))
        model.penalty_scale[key] = factor
        own = getattr(reg.config, reg.weight_setting) if reg.weight_setting else 1.0
        logged[f"weight.{key}"] = factor * float(own)
    return logged


def bottleneck_weights(model: Any, warmup: int, epoch: int) -> dict[str, float]:
    """Set the share of its weight the bottleneck's own loss terms get in training for
    ``epoch`` (its ``warmup_epochs``); returns ``weight.<loss name>`` for each of its
    ``loss_names`` (the share times its ``weight_setting``), where it has a warm-up or a weight."""
    bottleneck = model.bottleneck
    setting = getattr(bottleneck, "weight_setting", None)
    if not warmup and not setting:
        return {}
    factor = warmup_factor(epoch, warmup)
    model.loss_scale = factor
    own = float(getattr(bottleneck.config, setting)) if setting else 1.0
    return {f"weight.{name}": factor * own for name in getattr(bottleneck, "loss_names", ())}


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))
