"""The worker loop: claim a trial, train it as a tracked run, tell Optuna; fail and retry the
trials of dead workers. Every Optuna internal it needs goes through :mod:`.optuna_adapter`."""

from __future__ import annotations

import math
import os
import socket
import time
from typing import TYPE_CHECKING

from aepipe.errors import AepipeError, ConfigError
from aepipe.tune import optuna_adapter as adapter
from aepipe.tune.record import end_trial_run
from aepipe.tune.study import COMMAND_ATTR, FAIL_ATTR, RUN_ATTR, WORKER_ATTR, Study, command_id, finished_count

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.plugins import AepipePluginManager


#: seconds a worker first waits for the last trials that run elsewhere (doubling up to ``poll``)
IDLE_FIRST = 0.05


class ObjectiveError(ConfigError):
    """The objective metric is not among the run's metrics: no trial can succeed."""


def recover_dead_trials(study) -> int:
    """Fail RUNNING trials whose worker process on this machine is gone, end their runs FAILED
    and retry each with the same parameters (Optuna's heartbeat does this for RDB storages across
    machines, through :class:`FailAndEnd`)."""
    from optuna.trial import TrialState

    from aepipe.tracking.base import process_alive

    adapter.fail_stale(study)
    host = socket.gethostname()
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR, "")
        whost, _, pid = worker.rpartition(":")
        if whost != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        tid = adapter.trial_id(trial)
        # False from either: another worker, seeing the same dead one, got there first
        if adapter.set_attr(study, tid, FAIL_ATTR, f"worker {worker} died") and adapter.fail(study, tid):
            end_trial_run(trial, f"worker {worker} died")
            adapter.retry(study, tid)
            recovered += 1
    return recovered


def run_worker(
    pm: AepipePluginManager, st: Study, device: str | None = None, poll: float = 2.0, echo=print
) -> dict[str, int]:
    """Run trials until the study holds ``n_trials`` finished trials (or the timeout passes).
    Ctrl-C or SIGTERM stops it: the trial in training between two batches (its run KILLED), or
    between trials, never in the middle of a write to the study."""
    from aepipe.training.epoch import StopRequest

    with StopRequest():
        return _run_worker(pm, st, device, poll, echo)


def _run_worker(pm: AepipePluginManager, st: Study, device: str | None, poll: float, echo) -> dict[str, int]:
    from optuna.trial import TrialState

    from aepipe.config import resolve
    from aepipe.training import Interrupted, epoch, train

    study = st.study
    settings = st.settings
    target = settings.n_trials
    max_failures = settings.max_failures or max(3, target)
    metrics, single = settings.objective_metrics, len(settings.objective_metrics) == 1
    worker = f"{socket.gethostname()}:{os.getpid()}"
    started = time.monotonic()
    counts = {"complete": 0, "pruned": 0, "failed": 0}
    idle = IDLE_FIRST

    while True:
        if epoch.PROCESS_STOP:  # a stop asked for between trials, or while a trial was finishing
            raise Interrupted(f"study '{st.name}' stopped by {epoch.PROCESS_STOP} between trials; "
                              "run the same `aepipe tune` command again to continue the study")
        recover_dead_trials(study)
        if finished_count(study) >= target:
            break
        if settings.timeout and time.monotonic() - started > settings.timeout:
            echo(f"timeout of {settings.timeout:.0f}s reached; starting no more trials")
            break
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        if finished_count(study) + running >= target and not waiting:
            # the last trials are running elsewhere: wait for them (and take over any that fail),
            # looking again soon at first, then every ``poll`` seconds
            time.sleep(idle)
            idle = min(poll, 2 * idle)
            continue
        idle = IDLE_FIRST
        with adapter.claim_lock(study, st.storage_url):  # one claim at a time: no surplus trial
            busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED))
            if len(busy) >= target and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                continue  # another worker took the last slot meanwhile
            trial = study.ask(st.distributions)
            trial.set_user_attr(WORKER_ATTR, worker)
        trial.set_user_attr(COMMAND_ATTR, command_id())
        if trial.user_attrs.get(FAIL_ATTR):  # a retried trial starts with a clean record
            trial.set_user_attr(FAIL_ATTR, "")
        try:
            state, values, reason = _run_trial(pm, st, trial, device, metrics, single, train, resolve)
        except ObjectiveError as exc:  # no trial of this study can succeed: record this one, stop
            trial.set_user_attr(FAIL_ATTR, str(exc)[:2000])
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Interrupted as exc:  # Ctrl-C or SIGTERM: the trial's run is KILLED; this worker stops
            trial.set_user_attr(FAIL_ATTR, f"interrupted: {exc}"[:2000])
            study.tell(trial, state=TrialState.FAIL)
            raise Interrupted(f"study '{st.name}' stopped during trial {trial.number} (its run marked KILLED); "
                              "run the same `aepipe tune` command again to continue the study") from None
        if state == TrialState.COMPLETE:
            study.tell(trial, values)
            counts["complete"] += 1
        elif state == TrialState.PRUNED:
            study.tell(trial, state=TrialState.PRUNED)
            counts["pruned"] += 1
        else:
            trial.set_user_attr("aepipe.fail_reason", reason[:2000])
            study.tell(trial, state=TrialState.FAIL)
            counts["failed"] += 1
            if counts["failed"] >= max_failures:
                raise AepipeError(
                    f"study '{st.name}': {counts['failed']} trials failed in this worker (last: {reason}); stopping"
                )
        pm.call_plugin_hook("aepipe_trial_end", study=st.name, number=trial.number, state=state.name, values=values,
                            params=dict(trial.params), run_id=trial.user_attrs.get(RUN_ATTR))
        shown = "" if values is None else " ".join(f"{m}={v:.5g}" for m, v in zip(metrics, values))
        echo(f"trial {trial.number}: {state.name.lower()} {shown}{(' (' + reason + ')') if reason else ''}")
    return counts


class _Pruned(Exception):
    run_status = "KILLED"


def _run_trial(pm, st: Study, trial, device, metrics, single, train, resolve):
    """Train one trial; returns (state, values, failure reason)."""
    from optuna.trial import TrialState

    from aepipe.training import Interrupted

    params = dict(trial.params)
    try:
        pipeline = resolve(pm, st.pipeline_path, st.overrides, values=params, values_origin=f"trial {trial.number}:")
    except ConfigError as exc:
        return TrialState.FAIL, None, f"components rejected the sampled settings: {exc}"

    def report(epoch: int, total: int, epoch_metrics: dict[str, float]) -> None:
        missing = [m for m in metrics if m not in epoch_metrics]
        if missing:
            available = ", ".join(sorted(k for k in epoch_metrics if k.startswith("val_")))
            raise ObjectiveError(f"{st.pipeline_path}: [tune] metric '{missing[0]}' is not a per-epoch metric of this "
                                 f"pipeline; available: {available}")
        if single:
            trial.report(epoch_metrics[metrics[0]], epoch)
            if trial.should_prune():
                raise _Pruned(f"pruned by Optuna at epoch {epoch}")

    tags = {
        "mlflow.parentRunId": st.parent_run_id,
        "aepipe.study": st.name,
        "aepipe.trial": str(trial.number),
        **{f"aepipe.trial.param.{k}": str(v) for k, v in params.items()},
    }
    pipeline.settings.tracking.run_name = f"{st.name} trial {trial.number}"
    from aepipe.tracking import default_tracker

    tracker = default_tracker()
    pipeline.settings.tracking.experiment = tracker.experiment_name(st.experiment_id)
    started: list[str] = []

    def on_start(run_id: str) -> None:  # known to the study at once: a dead worker's run can be ended
        started.append(run_id)
        trial.set_user_attr(RUN_ATTR, run_id)

    with adapter.Heartbeat(st.study, adapter.trial_id(trial)):
        try:
            result = train(pipeline, pm, device=device, reporter=report, tags=tags, tracker=tracker, on_start=on_start,
                           artifacts=st.settings.log_models == "all", data_cache=st.data_cache)
        except _Pruned:
            _tag_trial(tracker, started, "PRUNED")
            return TrialState.PRUNED, None, ""
        except (ObjectiveError, Interrupted):
            _tag_trial(tracker, started, "FAIL")
            raise
        except AepipeError as exc:
            _tag_trial(tracker, started, "FAIL")
            return TrialState.FAIL, None, str(exc)
    best = result.best_epoch()
    values = [best[m] for m in metrics]
    if any(not math.isfinite(v) for v in values):
        _tag_trial(tracker, started, "FAIL")
        return TrialState.FAIL, None, f"objective is not finite: {values}"
    _tag_trial(tracker, started, "COMPLETE", {f"objective.{m}": v for m, v in zip(metrics, values)})
    return TrialState.COMPLETE, values, ""


def _tag_trial(tracker, started: list[str], state: str, metrics: dict[str, float] | None = None) -> None:
    """Record the trial's state (and objective values) on its run, where one was started."""
    if not started:
        return
    run = tracker.open(started[0])
    run.set_tags({"aepipe.trial_state": state})
    if metrics:
        run.log_metrics(metrics, 0)
    run.close()
