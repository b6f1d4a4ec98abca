"""One training epoch (aepipe's own ``aepipe_train_epoch``), and stopping between batches.

Batches are drawn by index from the training split (held on the device, or streamed through a
DataLoader in the same order); the epoch's metric sums stay on the device and are returned as 0-d
tensors, read back once with the validation metrics.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from aepipe.training import distributed
from aepipe.training.state import Position
from aepipe.training.step import optimizer_step, owned_regularizers


class Stopped(Exception):
    """A stop was asked for (Ctrl-C, SIGTERM) and the epoch stopped between two batches."""

    def __init__(self, signal_name: str, position: Position, batches: int):
        super().__init__(signal_name)
        self.signal_name, self.position, self.batches = signal_name, position, batches


#: the signal that last asked this process to stop (None: none did). A stop that arrives while a
#: run is finishing lets the run finish; whatever runs runs after it (a tuning worker) checks this.
PROCESS_STOP: str | None = None
#: a second SIGINT this soon after the first is the same Ctrl-C passed on by a launcher
#: (torchrun signals the processes the terminal signalled already), not a second one
ECHO_SECONDS = 0.5
_DEPTH = 0  # StopRequests entered and not yet left


class StopRequest:
    """While a run trains, Ctrl-C (SIGINT) and SIGTERM ask it to stop at the next batch boundary,
    where it writes a checkpoint of exactly where it stands; a second Ctrl-C interrupts at once.
    Signal handlers exist only in the main thread: elsewhere this never asks to stop."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        self._asked = 0.0

    @property
    def requested(self) -> bool:
        if self.signal_name is None and PROCESS_STOP is not None:  # asked before this run began
            self.signal_name = PROCESS_STOP
        return self.signal_name is not None

    def request(self, name: str = "a request") -> None:
        self.signal_name = name

    def _handle(self, signum: int, frame: Any) -> None:
        global PROCESS_STOP
        now = time.monotonic()
        if self.signal_name is not None and signum == signal.SIGINT and now - self._asked > ECHO_SECONDS:
            raise KeyboardInterrupt  # the second Ctrl-C
        if self.signal_name is None:
            self._asked = now
        self.signal_name = PROCESS_STOP = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        global PROCESS_STOP, _DEPTH
        if _DEPTH == 0:  # the outermost: a new command's or run's stop, not an old one's
            PROCESS_STOP = None
        _DEPTH += 1
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        global _DEPTH
        _DEPTH -= 1
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


@dataclass
class EpochPass:
    """Where one pass over the training batches starts: the epoch's shuffled order ``perm``, the
    ``first`` batch to train of ``batches``, the metric names (``keys``) and their sums so far
    (``total``; None: none yet) and the clock's start (``started``, less the seconds a stopped
    epoch had run)."""

    perm: torch.Tensor
    first: int
    batches: int
    keys: list[str] | None
    total: torch.Tensor | None
    started: float


class MetricSums:
    """An epoch's metric sums (each step's values weighted by its batch's rows), kept on the
    device. A step keeps one tensor: its one value detached (a loss that is its only term), or
    its values stacked outside autograd; every :data:`FLUSH` steps, and when asked, they are
    added up in a few operations. A step costs one operation here, where stacking its detached
    metrics and adding them to the sums cost 2k + 3 for k metrics (a tenth of a small model's step)."""

    FLUSH = 256

    def __init__(self, keys: list[str] | None = None, total: torch.Tensor | None = None):
        self.keys, self.total = keys, total
        self._steps: list[torch.Tensor] = []  # (k,) values, or one 0-d value for all k
        self._rows: list[int] = []

    def add(self, values: dict[str, torch.Tensor], rows: int) -> None:
        """Add one step's ``values`` (0-d tensors), from a batch of ``rows`` rows."""
        if self.keys is None:
            self.keys = list(values)
        first = values[self.keys[0]]
        if all(values[key] is first for key in self.keys):
            self._steps.append(first.detach())
        else:
            with torch.no_grad():
                self._steps.append(torch.stack([v if v.dim() == 0 else v.reshape(())
                                                for v in map(values.__getitem__, self.keys)]))
        self._rows.append(rows)
        if len(self._rows) >= self.FLUSH:
            self.flush()

    def flush(self) -> torch.Tensor | None:
        """The sums so far, one per key (None before the first step)."""
        if not self._rows:
            return self.total
        assert self.keys is not None
        k = len(self.keys)
        if all(step.dim() == 1 for step in self._steps):
            steps = torch.stack(self._steps)
        elif all(step.dim() == 0 for step in self._steps):
            steps = torch.stack(self._steps).unsqueeze(1).expand(-1, k)
        else:
            steps = torch.stack([step.reshape(()).expand(k) if step.dim() != 1 else step for step in self._steps])
        steps = steps.float()
        if all(r == self._rows[0] for r in self._rows):  # full batches: one weight, no copy to the device
            part = steps.sum(0) * self._rows[0]
        else:
            part = (steps * torch.tensor(self._rows, dtype=steps.dtype).to(steps.device).unsqueeze(1)).sum(0)
        self.total = part if self.total is None else self.total + part
        self._steps.clear()
        self._rows.clear()
        return self.total


def train_epoch(run: Any, epoch: int) -> dict[str, torch.Tensor]:
    """One pass over the training data in shuffled batches (continuing from where a stopped
    epoch left off); returns the epoch's mean metrics as 0-d tensors on the device."""
    data, s = run.data, run.config.settings.train
    n, bs = len(data.train), s.batch_size
    position, run.state.position = run.state.position, None
    world = run.world or distributed.SINGLE
    # a streamed split's loader reads the order on the CPU; a held one indexes on the device
    where = torch.device("cpu") if data.train.streamed else run.device
    started = time.perf_counter() - (position.seconds if position else 0.0)
    batches = -(-n // bs)
    if position is None and world.enabled:  # one order on every process, whatever each one's noise drew
        order = torch.Generator().manual_seed(s.seed * 1_000_003 + epoch)
        at = EpochPass(torch.randperm(n, generator=order).to(where), 0, batches, None, None, started)
    elif position is None:
        at = EpochPass(torch.randperm(n, device=where), 0, batches, None, None, started)
    else:
        total = None if position.sums is None else position.sums.to(run.device)
        at = EpochPass(position.perm.to(where), position.batch, batches, position.keys or None, total, started)
    run.model.train()
    with _unchecked_distributions():
        graphed = getattr(run.train_step, "run_epoch", None)  # train.cuda_graphs: replays (training/graphs.py)
        return graphed(run, at) if graphed is not None else _batches(run, at)


@contextlib.contextmanager
def _unchecked_distributions():
    """torch.distributions checks every distribution's arguments when it is built (a reduction
    per parameter per batch: 10-15% of a small VAE's epoch on a CPU). The first-step check and
    evaluation keep the checks; a NaN in training surfaces as a diverging loss at the epoch's end."""
    from torch.distributions import Distribution

    before = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(before)


def _batches(run: Any, at: EpochPass) -> dict[str, torch.Tensor]:
    model, data, optimizer, schedule = run.model, run.data, run.optimizer, run.schedule
    s = run.config.settings.train
    world = run.world or distributed.SINGLE
    n, bs, perm = len(data.train), s.batch_size, at.perm
    sums = MetricSums(at.keys, at.total)
    step_of = run.train_step or functools.partial(model.step, training=True)
    after = model.after_step_parts()  # components that update state after every step (EMA codebooks...)
    owned = owned_regularizers(model)
    params = model.model_parameters() if s.max_grad_norm else None
    # this process's share of each batch, read (a streamed split: ahead, by its workers) in order
    feed = data.train.ordered(distributed.shard(world, perm[b * bs: (b + 1) * bs]) for b in range(at.first, at.batches))
    for b in range(at.first, at.batches):
        asked = run.stop is not None and run.stop.requested
        if distributed.any_true(world, asked, run.device) if world.enabled else asked:  # all processes stop together
            if not asked and run.stop is not None:  # a terminal's Ctrl-C reaches every process: wait a moment for
                waited = time.perf_counter() + 1.0  # this one's own signal, so the run says SIGINT, not another's stop
                while not run.stop.requested and time.perf_counter() < waited:
                    time.sleep(0.01)
                asked = run.stop.requested
            name = (run.stop.signal_name if asked else None) or "a stop on another process"
            raise Stopped(name, Position(b, perm, sums.keys or [], sums.flush(), time.perf_counter() - at.started),
                          at.batches)
        xb, yb = next(feed)
        with run.amp:
            loss, terms, step = step_of(xb, yb)  # on several processes, DistributedDataParallel's ...
        # ... which averages the gradients over the processes in the step's backward()
        own = optimizer_step(model, optimizer, loss, step, s.max_grad_norm, params, after, owned)
        schedule.after_batch()
        sums.add({"loss": loss, **terms, **own}, xb.shape[0])
    keys, total = sums.keys, sums.flush()
    assert keys is not None and total is not None
    if world.enabled:
        total = distributed.sum_(world, total)  # every process's shard: the epoch's means over all n rows
        distributed.average_buffers(world, model)
    return dict(zip(keys, (total / n).unbind()))
