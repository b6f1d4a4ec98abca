"""The CUDA-graph path of a training epoch (``train.cuda_graphs = true``, on CUDA only).

A small model's eager step on a GPU is bound by the Python side and by kernel launches: every
operation costs a launch whatever its size. This path captures the whole step once, in a CUDA
graph (torch.cuda.graphs, "whole-network capture"), and replays it for every batch: the rows of
the batch gathered from the training split held on the device (through a static index tensor),
the forward pass and loss, the backward pass, gradient clipping, the optimizer's step (Adam or
AdamW with ``capturable=True`` and a learning rate held in a tensor, which the schedules update
in place) and the epoch's metric sums. A batch then costs one copy of its indices and one replay.

Static shapes: every replay trains ``batch_size`` rows, so the last short batch of each epoch's
shuffled order is dropped (a different ``n % batch_size`` rows each epoch); the epoch's metrics
are the means over the rows trained.

Capture happens at the first epoch: three warm-up steps on a side stream (torch's recipe, so
that lazily built state, Adam's moments included, exists before capture), then the capture; the
weights, buffers and optimizer state are then put back, in place, to what they were before the
warm-up, so training starts where the eager path would. The random draws (noise, dropout,
reparameterised samples) come from the graph's own offsets of CUDA's generator: the same
distribution as the eager path's, not the same numbers.

Refused, in one line, where it cannot hold (:func:`aepipe.training.device.check_cuda_graphs`,
and :func:`graphed_step` for what needs the model): off CUDA, on several processes, an optimizer
other than Adam or AdamW, torch.compile, a streamed training split, a regularizer that takes its
own optimizer steps or a component that updates state after each step, a batch larger than the
training split, and a step that cannot be captured (one that reads a value back to the CPU).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from aepipe.errors import ConfigError
from aepipe.training.epoch import EpochPass, Stopped
from aepipe.training.state import Position
from aepipe.training.step import optimizer_step, owned_regularizers

#: warm-up steps before capture (torch's recipe uses a few, on a side stream)
WARMUP = 3


def graphed_step(pipeline: Any, model: Any, optimizer: torch.optim.Optimizer, data: Any, device: torch.device,
                 amp: Any) -> "GraphedStep":
    """The graphed training step of a run, or a one-line refusal of what it cannot capture."""
    s = pipeline.settings.train
    where = f"{pipeline.source}: train.cuda_graphs = true"
    if data.train.streamed:
        raise ConfigError(f"{where} needs the training split held on the device; this dataset streams it")
    if owned_regularizers(model):
        raise ConfigError(f"{where}: regularizer '{owned_regularizers(model)[0].name}' takes its own optimizer steps, "
                          "which the graph does not capture")
    if model.after_step_parts():
        raise ConfigError(f"{where}: {model.after_step_parts()[0].kind} '{model.after_step_parts()[0].name}' updates "
                          "state after every step, which the graph does not capture")
    if len(data.train) < s.batch_size:
        raise ConfigError(f"{where} drops the last short batch: train.batch_size {s.batch_size} is larger than the "
                          f"training split ({len(data.train)} rows)")
    return GraphedStep(model, optimizer, data, device, amp, s.batch_size, s.max_grad_norm or 0.0, pipeline.source)


class GraphedStep:
    """One training step, captured in a CUDA graph at the first epoch and replayed for every
    full batch of each epoch (:meth:`run_epoch`). Called as a function it is the eager step
    (``model.step(x, y, training=True)``), as a run's ``train_step`` is elsewhere."""

    def __init__(self, model: Any, optimizer: torch.optim.Optimizer, data: Any, device: torch.device, amp: Any,
                 batch_size: int, max_grad_norm: float, source: str):
        self.model, self.optimizer, self.data, self.device, self.amp = model, optimizer, data, device, amp
        self.batch_size, self.max_grad_norm, self.source = batch_size, max_grad_norm, source
        self.params = model.model_parameters() if max_grad_norm else None
        self.index = torch.zeros(batch_size, dtype=torch.long, device=device)  # the batch's positions, copied in
        self.keys: list[str] = []
        self.total: torch.Tensor | None = None  # the epoch's metric sums, added to inside the graph
        self.graph: Any = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        return self.model.step(x, y, training=True)

    def _body(self, total: torch.Tensor | None) -> None:
        """What the graph holds: gather, forward, backward, clip, step, and the sums."""
        xb, yb = self.data.train.take(self.index)
        with self.amp:
            loss, terms, step = self.model.step(xb, yb, training=True)
        optimizer_step(self.model, self.optimizer, loss, step, self.max_grad_norm, self.params, [], [])
        values = {"loss": loss, **terms}
        self.keys = list(values)
        if total is not None:
            with torch.no_grad():
                total.add_(torch.stack([v.detach().float().reshape(()) for v in values.values()]),
                           alpha=self.batch_size)

    def _capture(self, perm: torch.Tensor) -> None:
        model, optimizer, device = self.model, self.optimizer, self.device
        for group in optimizer.param_groups:  # a learning rate the schedules update in place, read by the graph
            group["capturable"] = True
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for state in optimizer.state.values():  # a resumed run's step counts, kept on the CPU by the eager path
            if isinstance(state.get("step"), torch.Tensor) and state["step"].device != device:
                state["step"] = state["step"].to(device, torch.float32)
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        before = {id(s): {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
                  for s in optimizer.state.values()}
        self.index.copy_(perm[: self.batch_size])
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        try:
            with torch.cuda.stream(side):
                for _ in range(WARMUP):
                    self._body(None)
            torch.cuda.current_stream(device).wait_stream(side)
            self.total = torch.zeros(len(self.keys), device=device)
            optimizer.zero_grad(set_to_none=True)  # the gradients are allocated in the graph's pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._body(self.total)
        except RuntimeError as exc:
            first = " ".join(str(exc).split())[:200]
            raise ConfigError(f"{self.source}: train.cuda_graphs = true: this model's step cannot be captured in a "
                              f"CUDA graph ({first}); set train.cuda_graphs = false") from None
        with torch.no_grad():  # back to where training starts, in place: the graph holds these tensors
            for key, value in model.state_dict().items():
                value.copy_(weights[key])
            for state in optimizer.state.values():
                saved = before.get(id(state))
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and saved is not None:
                        value.copy_(saved[key])
                    elif isinstance(value, torch.Tensor):  # built by the warm-up: a fresh Adam's state is zeros
                        value.zero_()
        self.graph = graph

    def run_epoch(self, run: Any, at: EpochPass) -> dict[str, torch.Tensor]:
        """The epoch of :func:`aepipe.training.epoch.train_epoch`, by replays: the full batches
        of ``at``'s order from its ``first``; stops between two batches as the eager epoch does."""
        bs, perm = self.batch_size, at.perm.to(self.device)
        full = len(self.data.train) // bs
        if self.graph is None:
            self._capture(perm)
        assert self.total is not None
        if at.total is None:
            self.total.zero_()
        else:
            self.total.copy_(at.total)
        stop = run.stop
        for b in range(at.first, full):
            if stop is not None and stop.requested:
                raise Stopped(stop.signal_name or "a request",
                              Position(b, perm, list(self.keys), self.total.clone(), time.perf_counter() - at.started),
                              full)
            self.index.copy_(perm[b * bs: (b + 1) * bs])
            self.graph.replay()
            run.schedule.after_batch()
        return dict(zip(self.keys, (self.total / (full * bs)).unbind()))
