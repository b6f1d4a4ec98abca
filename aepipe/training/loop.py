"""The training loop: one run, from a fresh start or a checkpoint, through a tracker.

Everything around the epochs hangs off seams: the run's state is a :class:`TrainState`, the run
store a :class:`~aepipe.tracking.base.Tracker`, each epoch the ``aepipe_train_epoch`` hook
(aepipe's own implementation, which plugins may wrap), and the rest lifecycle hooks.
"""

from __future__ import annotations

import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from aepipe.config import Pipeline
from aepipe.context import RunContext
from aepipe.data import DataBundle
from aepipe.errors import AepipeError, ConfigError, PluginError, TrainingError
from aepipe.model import AutoEncoder, build_model
from aepipe.training import distributed, run_log as report
from aepipe.training.assemble import assemble
from aepipe.training.device import select_device
from aepipe.training.epoch import StopRequest, Stopped, train_epoch
from aepipe.training.setup import load_data
from aepipe.training.metrics import (check_finite, component_metrics, evaluate_tensors, fit_on_codes as fit_sampler,
                                     read_back)
from aepipe.training.resume import CHECKPOINT, bind, pipeline_for_resume, read_checkpoint
from aepipe.training.schedules import LRSchedule, bottleneck_weights, regularizer_weights
from aepipe.training.state import TrainState, save_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.plugins import AepipePluginManager

Reporter = Callable[[int, int, dict[str, float]], None]

#: the tag of a run whose figures, model and dataset were logged after it ended (:meth:`Trainer.log_artifacts`)
ARTIFACTS_TAG = "aepipe.artifacts"


class Interrupted(AepipeError):
    """The run was stopped by the user (Ctrl-C, SIGTERM); the message says how to continue."""

    exit_code = 130


@dataclass
class RunResult:
    run_id: str
    experiment_id: str
    status: str
    epochs: int
    metrics: dict[str, float]
    stopped_early: bool = False
    seconds: float = 0.0
    model: AutoEncoder | None = field(default=None, repr=False)
    data: DataBundle | None = field(default=None, repr=False)
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

    def best_epoch(self) -> dict[str, float]:
        """The metrics of the epoch whose weights were kept (lowest validation loss)."""
        return min(self.history, key=lambda h: h["val_loss"])

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "status": self.status,
                "epochs": self.epochs,
                "stopped_early": self.stopped_early, "seconds": round(self.seconds, 3), "metrics": self.metrics}


class CheckpointPolicy:
    """Periodic checkpoints every ``every`` epochs, at least ``seconds`` apart: a killed process
    loses at most that much; Ctrl-C, SIGTERM, early stopping and the end always write one."""

    def __init__(self, every: int, seconds: float, saved_epoch: int = 0):
        self.every, self.seconds, self.saved_epoch = every, seconds, saved_epoch
        self.last = time.perf_counter()

    def due(self, epoch: int) -> bool:
        return epoch % self.every == 0 and time.perf_counter() - self.last >= self.seconds

    def saved(self, epoch: int) -> None:
        self.saved_epoch, self.last = epoch, time.perf_counter()


class Trainer:
    """Trains one pipeline as one tracked run."""

    def __init__(self, pipeline: Pipeline | None, pm: AepipePluginManager, device: str | None = None,
                 reporter: Reporter | None = None,
                 tracker: Any = None, on_start: Callable[[str], None] | None = None, overrides: tuple[str, ...] = (),
                 artifacts: bool = True, data_cache: dict[Any, DataBundle] | None = None):
        self.pipeline, self.pm, self.reporter, self.on_start = pipeline, pm, reporter, on_start
        #: whether the run logs its figures, model and dataset (False: a study's trial, whose best
        #: get theirs when the study ends, through :meth:`log_artifacts`)
        self.artifacts = artifacts
        #: data already loaded, by what decides it (a study's worker keeps it across its trials)
        self.data_cache = data_cache
        self.overrides = tuple(overrides)  # with a resumed run and no pipeline: --set over the run's own
        self.device_name = device
        self.store: Any = None  # on a process other than rank 0: the run store it reads (its tracker is in memory)
        self._ended: str | None = None  # the run this trainer ended (see _end)
        if tracker is None:
            from aepipe.tracking import default_tracker

            tracker = default_tracker()
        self.tracker = tracker

    def run(self, resume: str | None = None, tags: dict[str, str] | None = None) -> RunResult:
        """Train as a new run (with extra ``tags``; ``mlflow.parentRunId`` nests it) or continue
        run ``resume`` from its checkpoint. Started by a launcher on several processes (see
        :mod:`aepipe.training.distributed`), rank 0 tracks the run and the others train with it."""
        world = distributed.from_environment()
        if not world.enabled:
            return self._run(resume, tags, world)
        if not world.leader:
            from aepipe.tracking.memory import MemoryTracker

            self.store, self.tracker = self.tracker, MemoryTracker()  # rank 0 alone writes to the store; all read it
        try:
            return self._run(resume, {**(tags or {}), "aepipe.world_size": str(world.size)}, world)
        except Interrupted as exc:
            exc.reported = not world.leader  # rank 0 tells the run's stop and how to continue it
            raise
        except RuntimeError as exc:  # a collective failed: another process died (the run is FAILED already)
            first = " ".join(str(exc).split())[:300]
            error = TrainingError(f"rank {world.rank}: lost the other training processes ({first})")
            error.exit_code = 1  # not the user's doing
            raise error from None
        finally:
            distributed.stop(world)

    def _run(self, resume: str | None, tags: dict[str, str] | None, world: Any) -> RunResult:
        state, saved = self._restore(resume, world) if resume else (None, {})
        p = self.pipeline
        assert p is not None, "a pipeline, or a run to resume"
        s = p.settings
        parts = assemble(p, self.device_name, world, self._load_data, state.epoch if state else 0, fresh=state is None)
        model, data, device = parts.model, parts.data, parts.device
        optimizer, schedule = parts.optimizer, parts.schedule
        if s.train.cuda_graphs:  # on CUDA only (refused elsewhere by assemble): the step captured at the first epoch
            from aepipe.training.graphs import graphed_step

            parts.train_step = graphed_step(p, model, optimizer, data, device, parts.amp)
        if state is None:
            state = TrainState(pipeline=parts.toml)
            tracked = self.tracker.start(s.tracking.experiment, s.tracking.run_name,
                                         {**report.tags(p, self.pm, device, data), **(tags or {})},
                                         system_metrics=report.system_metrics(s.tracking))
            bind(state, tracked.run_id, parts.toml)  # the text report.log_start logs as the run's pipeline.toml
        elif not world.leader:  # a resumed run's other processes: rank 0's state, their own noise, nothing tracked
            _load_parts(saved, model, optimizer, schedule)
            tracked = self.tracker.start(s.tracking.experiment, s.tracking.run_name, tags)
        else:
            _load_parts(saved, model, optimizer, schedule)
            state.restore_rng()
            tracked = self.tracker.resume(resume)
            tracked.set_tags({k: v for k, v in report.tags(p, self.pm, device, data).items()
                              if k.startswith("aepipe.data.")})
            state.pipeline = parts.toml  # with train.epochs raised, where it was
        logged = max(tracked.logged_steps("loss"), default=0) if resume else 0  # epochs a killed process had logged
        run = RunContext(p, model, data, device, tracked, state, optimizer, schedule, StopRequest(), parts.amp,
                         world=world, train_step=parts.train_step, default_epoch=train_epoch)
        if self.on_start is not None:
            self.on_start(tracked.run_id)
        checkpoint = self.tracker.checkpoint_dir(tracked.run_id) / CHECKPOINT
        policy = CheckpointPolicy(s.train.checkpoint_every, s.train.checkpoint_seconds, state.epoch)
        warmups = {key: choice.warmup_epochs for key, choice in p.regularizers.items()}
        held = p.components.get("bottleneck")
        held_warmup = held.warmup_epochs if held is not None else 0
        started = time.perf_counter()
        with run.stop:
            try:
                if resume is None:
                    report.log_start(run, dataset=self.artifacts)
                self.pm.call_plugin_hook("aepipe_run_start", run=run)
                started = time.perf_counter()
                last = state.epoch if state.done else s.train.epochs  # a run killed while it finished trains no more
                for epoch in range(state.epoch + 1, last + 1):
                    epoch_started = time.perf_counter() - (state.position.seconds if state.position else 0.0)
                    weights, lr = regularizer_weights(model, warmups, epoch), schedule.lr
                    weights.update(bottleneck_weights(model, held_warmup, epoch))
                    trained = self.pm.call_plugin_hook("aepipe_train_epoch", run=run, epoch=epoch)
                    metrics = read_back(trained, evaluate_tensors(model, data.val), prefixes=("", "val_"))
                    check_finite(metrics, epoch, p.source)
                    metrics.update(weights, lr=lr, epoch_seconds=time.perf_counter() - epoch_started)
                    metrics.update(read_back(component_metrics(model, "epoch", data.val), prefixes=("val_",)))
                    for extra in self.pm.call_plugin_hook("aepipe_epoch_end", run=run, epoch=epoch,
                                                          metrics=dict(metrics)):
                        metrics.update({f"val_{k}": float(v) for k, v in (extra or {}).items()})
                    if epoch > logged:
                        tracked.log_metrics(metrics, epoch)  # written off this thread, batched
                    settled = all(part.settled() for part in model.components().values())
                    stop_early = state.record(epoch, metrics, s.train.min_delta, s.train.patience, model.state_dict(),
                                              settled)
                    schedule.after_epoch(epoch, metrics["val_loss"])
                    if self.reporter:
                        self.reporter(epoch, s.train.epochs, metrics)
                    if stop_early or policy.due(epoch):
                        self._checkpoint(checkpoint, run, policy, started)
                    if stop_early:
                        break
                state.train_seconds += time.perf_counter() - started
                return self._finish(run, checkpoint)
            except Stopped as stop:
                state.position = stop.position
                state.train_seconds += time.perf_counter() - started
                where = f"epoch {state.epoch + 1}, batch {stop.position.batch} of {stop.batches}"
                try:
                    self._checkpoint(checkpoint, run, policy)
                except BaseException as exc:  # its checkpoint failed (a full disk, a second Ctrl-C): the run still ends
                    self._end(run, checkpoint, "KILLED",
                              f"stopped by {stop.signal_name} at {where}; its checkpoint of there "
                                                         f"could not be written: {_first_line(exc)}")
                    raise
                self._end(run, checkpoint, "KILLED", f"stopped by {stop.signal_name} at {where}")
                raise Interrupted(f"stopped by {stop.signal_name} at {where}; run {tracked.run_id} marked KILLED with "
                                  "a checkpoint of where it stood; continue with: aepipe train --resume "
                                  f"{tracked.run_id}") from None
            except KeyboardInterrupt:
                at = state.epoch + 1
                self._end(run, checkpoint, "KILLED", f"interrupted by the user at epoch {at}")
                if not policy.saved_epoch:
                    raise Interrupted(f"interrupted at epoch {at}; run {tracked.run_id} marked KILLED before its first "
                                      f"checkpoint (train.checkpoint_every = {s.train.checkpoint_every}, "
                                      f"checkpoint_seconds = {s.train.checkpoint_seconds:g}); start it again") from None
                raise Interrupted(f"interrupted at epoch {at}; run {tracked.run_id} marked KILLED, checkpoint of epoch "
                                  f"{policy.saved_epoch} saved; continue with: aepipe train --resume "
                                  f"{tracked.run_id}") from None
            except AepipeError as exc:
                self._end(run, checkpoint, "FAILED", str(exc))
                raise
            except Exception as exc:  # noqa: BLE001 - any failure ends the run, then propagates
                # an exception may carry its own run status (a pruned tuning trial: KILLED)
                status = getattr(exc, "run_status", "FAILED")
                detail = str(exc) if status != "FAILED" else f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                self._end(run, checkpoint, status, detail)
                raise
            except BaseException as exc:  # SystemExit, GeneratorExit...: component code never ends the command
                from aepipe.plugins import describe_exception

                info = self.pm.blame(exc)
                who = info.describe() if info else "a component"
                reason = f"{who} raised {describe_exception(exc)} during the run"
                self._end(run, checkpoint, "FAILED", reason)
                raise PluginError(reason, plugin=info.name if info else None) from exc

    def log_artifacts(self, run_id: str) -> None:
        """Log the figures, model and dataset of finished run ``run_id``, rebuilt from its stored
        checkpoint (the weights it was evaluated with), as its own end would have: a study's best
        trials get theirs when the study ends. The run keeps its status and end time."""
        state, parts, logged = read_checkpoint(self.tracker, run_id)
        p = pipeline_for_resume(self.pm, run_id, state, logged, None)
        device = select_device(self.device_name or p.settings.train.device)
        data = self._load_data(p, device)
        model = build_model(p, data).to(device)
        model.load_state_dict(parts["model"])
        tracked = self.tracker.open(run_id)
        try:
            report.log_end(RunContext(p, model, data, device, tracked, state), self.pm, dataset=True)
            tracked.set_tags({ARTIFACTS_TAG: "logged"})
        finally:
            tracked.close()

    # --- the pieces -----------------------------------------------------------------------

    def _restore(self, run_id: str, world: Any) -> tuple[TrainState, dict[str, Any]]:
        """A resumed run's state and its own pipeline; refused while the run is live elsewhere.
        On several processes every one reads the checkpoint; rank 0 checks the lease and, after
        all have joined, takes it over."""
        from aepipe.tracking import check_run_id
        from aepipe.tracking.base import check_lease

        from aepipe.files import remove_partial

        store = self.store if world.enabled and not world.leader else self.tracker
        run_id = check_run_id(run_id, "--resume")
        record = store.get_run(run_id)
        if not (world.enabled and not world.leader):
            check_lease(record, "--resume")  # before anything is read or written
            remove_partial(store.checkpoint_dir(run_id))  # what a write of its dead process left half-done
        state, parts, logged = read_checkpoint(store, run_id)  # refused unless it is this run's, of its logged pipeline
        self.pipeline = pipeline_for_resume(self.pm, run_id, state, logged, self.pipeline, self.overrides)
        epochs = self.pipeline.settings.train.epochs
        # a run killed after its last checkpoint but before it was FINISHED ends now: resumed, it
        # trains no epoch and finishes (its test metrics, figures and model are logged again)
        if state.done and state.stopped_early and record.status == "FINISHED":  # more epochs would not change that
            raise ConfigError(f"--resume {run_id}: the run already finished ({state.epoch} epochs, stopped early: its "
                              f"val_loss stopped improving); train a new run with a larger train.patience to train on")
        if state.done and state.epoch >= epochs and record.status == "FINISHED":
            raise ConfigError(f"--resume {run_id}: the run already finished ({state.epoch} epochs"
                              f"{', stopped early' if state.stopped_early else ''}); raise train.epochs to train on")
        if state.done and (state.stopped_early or state.epoch >= epochs):
            return state, parts  # its training had ended (early stopping included): only the end of the run is left
        state.done = state.stopped_early = False
        return state, parts

    def _load_data(self, p: Pipeline, device: torch.device) -> DataBundle:
        """The pipeline's data: loaded, or the same data an earlier run of this trainer's cache
        loaded (the same dataset, settings and device; splits are only read by training)."""
        if self.data_cache is None:
            return load_data(p, device)
        key = (p.dataset.name, p.dataset.config.model_dump_json(), p.settings.data.model_dump_json(), str(device))
        if key not in self.data_cache:
            self.data_cache.clear()  # one dataset kept at a time
            self.data_cache[key] = load_data(p, device)
        return self.data_cache[key]

    def _checkpoint(self, path: Any, run: RunContext, policy: CheckpointPolicy, started: float | None = None) -> None:
        """Write the run's checkpoint, once every metric queued so far is stored: a checkpoint
        never claims epochs whose metrics a kill right after it would lose (``--resume`` logs
        only the epochs after the checkpoint's)."""
        state = run.state
        run.tracked.flush()
        state.capture_rng()
        if started is not None:  # a periodic checkpoint: the training time so far goes with it
            state.train_seconds, saved = state.train_seconds + time.perf_counter() - started, state.train_seconds
        save_checkpoint(path, state, _parts(run))
        if started is not None:
            state.train_seconds = saved
        policy.saved(state.epoch)

    def _finish(self, run: RunContext, checkpoint: Any) -> RunResult:
        model, data, state = run.model, run.data, run.state
        if state.best_weights is not None:
            model.load_state_dict(state.best_weights)  # evaluate the best epoch's weights
        test = read_back(evaluate_tensors(model, data.test), prefixes=("test_",))
        # the epochs used, the epoch whose weights are kept, and whether early stopping ended training
        test.update(train_seconds=state.train_seconds, epochs_trained=float(state.epoch),
                    best_epoch=float(state.best_epoch), stopped_early=float(state.stopped_early))
        test.update(read_back(component_metrics(model, "final", data), prefixes=("test_",)))
        if model.sampler is not None:  # the second stage: fitted on the training codes
            fit = fit_sampler(model, model.sampler, data.train)
            test.update({f"sampler.{k}": v for k, v in fit.items()})
        if run.config.settings.evaluate.metrics:  # [evaluate]: the eval_* metrics chosen for every run
            from aepipe.evaluation.measure import chosen_groups, compute

            from aepipe.sampling import build_sampler

            evaluation = run.config.settings.evaluate
            groups = chosen_groups(evaluation, everything=False)
            samplers = {}
            for name in evaluation.samplers if "generation" in groups else ():
                samplers[name] = build_sampler(model, name, pm=self.pm)
                fit_sampler(model, samplers[name], data.train)
            test.update(compute(model, data, evaluation, groups, samplers, pm=self.pm)[0])
        for extra in self.pm.call_plugin_hook("aepipe_run_end", run=run, metrics=dict(test)):
            test.update({f"test_{k}": float(v) for k, v in (extra or {}).items()})
        run.tracked.log_metrics(test, 0)
        if self.artifacts:
            report.log_end(run, self.pm)
        state.done = True
        run.tracked.flush()  # as for every checkpoint: the epochs it claims are stored
        save_checkpoint(checkpoint, state, _parts(run))
        self._end(run, checkpoint, "FINISHED")
        return RunResult(run.run_id, self.tracker.get_run(run.run_id).experiment_id, "FINISHED", state.epoch, test,
                         state.stopped_early, state.train_seconds, model, data, state.history)

    def _end(self, run: RunContext, checkpoint: Any, status: str, reason: str | None = None) -> None:
        """Keep the checkpoint with the run (``--resume`` reads it there) and end the run, once.
        Ending never hides why the run ended, nor loses its checkpoint: one that cannot be stored
        with the run (a full disk) stays in its folder, where ``--resume`` reads it too, and the
        reason says so (a run meant to finish then ends FAILED and the error is raised); a store
        that refuses to end the run leaves it to the sweep of the next command that opens it
        (:mod:`aepipe.tracking.sweep`), with a warning."""
        if self._ended == run.run_id:
            return
        self._ended = run.run_id
        failure: Exception | None = None
        try:
            if checkpoint.is_file():
                run.tracked.log_artifact(checkpoint, "checkpoint")
                checkpoint.unlink()  # the artifact is now the checkpoint: no second copy is kept
                for folder in (checkpoint.parent, checkpoint.parent.parent):
                    try:
                        folder.rmdir()
                    except OSError:
                        break
        except Exception as exc:  # noqa: BLE001 - whatever failed, the run is ended below
            note = f"its checkpoint stays at {checkpoint}: storing it with the run failed ({_first_line(exc)})"
            failure = exc if status == "FINISHED" else None
            status, reason = (("FAILED", note) if status == "FINISHED"
                              else (status, f"{reason}; {note}" if reason else note))
        try:
            run.tracked.finish(status, reason)
        except Exception as exc:  # noqa: BLE001 - the error that ended the run matters more
            if failure is not None or reason is None:
                raise
            warnings.warn(f"run {run.run_id} could not be marked {status} ({_first_line(exc)}); the next aepipe "
                          "command that opens the store ends it", RunNotEndedWarning, stacklevel=2)
        if failure is not None:
            raise failure


class RunNotEndedWarning(UserWarning):
    """The store refused to end a run that stopped (shown as one line)."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split())[:300] if lines else type(exc).__name__


def _parts(run: RunContext) -> dict[str, Any]:
    model = run.model
    own = {k: {name: opt.state_dict() for name, opt in r.optimizers.items()}
           for k, r in model.regularizers.items() if r.optimizers}
    return {"model": model.state_dict(), "optimizer": run.optimizer.state_dict(), "regularizer_optimizers": own,
            "schedule": run.schedule.state_dict()}


def _load_parts(parts: dict[str, Any], model: AutoEncoder, optimizer: torch.optim.Optimizer,
                schedule: LRSchedule) -> None:
    model.load_state_dict(parts["model"])
    optimizer.load_state_dict(parts["optimizer"])
    for key, states in parts.get("regularizer_optimizers", {}).items():
        for name, state in states.items():
            model.regularizers[key].optimizers[name].load_state_dict(state)
    schedule.load_state_dict(parts.get("schedule") or {})


def train(
    pipeline: Pipeline | None,
    pm: AepipePluginManager,
    device: str | None = None,
    resume: str | None = None,
    reporter: Reporter | None = None,
    tags: dict[str, str] | None = None,
    tracker: Any = None,
    on_start: Callable[[str], None] | None = None,
    overrides: tuple[str, ...] = (),
    artifacts: bool = True,
    data_cache: dict[Any, DataBundle] | None = None,
) -> RunResult:
    """Train ``pipeline`` as one tracked run (MLflow unless ``tracker`` says otherwise), or
    continue run ``resume`` (``pipeline`` may then be None: the run's own is used, with
    ``overrides`` over it). ``artifacts`` and ``data_cache``: see :class:`Trainer`."""
    trainer = Trainer(pipeline, pm, device=device, reporter=reporter, tracker=tracker, on_start=on_start,
                      overrides=overrides, artifacts=artifacts, data_cache=data_cache)
    return trainer.run(resume=resume, tags=tags)
