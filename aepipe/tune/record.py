"""What a study records in the tracker: its parent run, the runs its dead processes left
RUNNING, and its results (best trials, Optuna's plots, the best model in the registry)."""

from __future__ import annotations

import json
import time
from typing import Any

from aepipe.errors import AepipeError, ConfigError
from aepipe.tune.study import (COMMAND_ATTR, FINGERPRINT_TAG, PARENT_ATTR, RUN_ATTR, Study, command_id, digest,
                               finished_count, mask_url, retrying)


def ensure_parent_run(st: Study) -> str:
    """The study's MLflow parent run: found through the study's user attributes (so workers on
    other machines nest under the same run), created by the first worker."""
    from aepipe.tracking import default_tracker

    tracker = default_tracker()
    run_id = st.study.user_attrs.get(PARENT_ATTR)
    if run_id:
        st.parent_run_id = run_id
        record = tracker.get_run(run_id)
        st.experiment_id = record.experiment_id
        if record.status in ("KILLED", "FAILED"):  # its command was stopped: the study goes on
            tracker.reopen(run_id)
        if st.binding_notes or record.tags.get(FINGERPRINT_TAG) != digest(st.fingerprint):
            record_binding(st, tracker.open(run_id))
        return run_id
    parent = tracker.start(st.experiment, run_name=f"study {st.name}", lease=False, tags={
        "aepipe.study": st.name,
        "aepipe.role": "study",
        "aepipe.tune.storage": mask_url(st.storage_url),
        "aepipe.pipeline": str(st.pipeline_path),
        "mlflow.note.content": f"Optuna study '{st.name}': one child run per trial.",
    })
    st.experiment_id = tracker.get_run(parent.run_id).experiment_id
    st.study.set_user_attr(PARENT_ATTR, parent.run_id)
    time.sleep(0.2)
    chosen = st.study.user_attrs.get(PARENT_ATTR)  # another worker may have won the race
    st.parent_run_id = chosen
    if chosen != parent.run_id:
        tracker.delete_run(parent.run_id)
        return chosen
    space = {k: v.model_dump(exclude_none=True) for k, v in st.settings.space.items()}
    parent.log_text(json.dumps({"space": space, "metrics": st.settings.objective_metrics,
                                "directions": st.settings.objective_directions}, indent=2), "study/space.json")
    parent.log_params({f"tune.{key}": value for key, value in {
        "n_trials": st.settings.n_trials, "sampler": st.settings.sampler, "pruner": st.settings.pruner,
        "metrics": ",".join(st.settings.objective_metrics)}.items()})
    record_binding(st, parent)
    return chosen


def record_binding(st: Study, parent) -> None:
    """The study's fingerprint on its parent run (tag ``aepipe.fingerprint``: its digest;
    ``study/fingerprint.json``: the whole), and what :func:`aepipe.tune.study.hold_to_fingerprint` noted (a
    search space changed by ``--allow-new-space``, a study older than fingerprints): tags
    ``aepipe.binding`` and ``aepipe.binding.note``, the space as ``study/space.json``."""
    parent.log_text(json.dumps(st.fingerprint, indent=2), "study/fingerprint.json")
    tags = {FINGERPRINT_TAG: digest(st.fingerprint)}
    if st.binding_notes:
        what, note = st.binding_notes[-1]
        tags.update({"aepipe.binding": what, "aepipe.binding.note": note[:5000]})
        if what == "space changed":
            space = {k: v.model_dump(exclude_none=True) for k, v in st.settings.space.items()}
            parent.log_text(json.dumps({"space": space, "metrics": st.settings.objective_metrics,
                                        "directions": st.settings.objective_directions}, indent=2), "study/space.json")
    parent.set_tags(tags)
    st.binding_notes.clear()


def model_name(st: Study) -> str:
    """The registered model of the study's best trial: named after the study."""
    return st.name


def check_registry(st: Study) -> None:
    """Refuse a study whose registered model (:func:`model_name`) holds versions of another
    study's trials (another study of that name elsewhere, or runs registered by hand): a
    registered model holds the versions of one study. Called before any trial, and again
    before the best model is registered."""
    from aepipe.errors import RunNotFoundError
    from aepipe.tracking import default_tracker

    tracker = default_tracker()
    name = model_name(st)
    parent = st.parent_run_id or st.study.user_attrs.get(PARENT_ATTR)
    for run_id in tracker.registered_runs(name):
        try:
            tags = tracker.get_run(run_id).tags
        except (RunNotFoundError, ConfigError):
            tags = {}
        if not parent or tags.get("aepipe.study") != st.name or tags.get("mlflow.parentRunId") != parent:
            raise ConfigError(
                f"registered model '{name}' holds a version of run {run_id}, which is not a trial of study "
                f"'{st.name}'{f' (parent run {parent})' if parent else ''}: a registered model holds one "
                "study's models; tune under another --study name, or delete that registered model"
            )


def heal(st: Study) -> int:
    """End KILLED the runs of this study still RUNNING whose process is gone (a command or worker
    killed outright); returns how many. Runs held by a live process, here or elsewhere, stay.
    The rule and the ending are the store sweep's (:mod:`aepipe.tracking.sweep`), which leaves a
    study's runs to this."""
    from aepipe.tracking import default_tracker
    from aepipe.tracking.base import LEASE_OWNER
    from aepipe.tracking.sweep import end_dead_runs

    tracker = default_tracker()
    ended = end_dead_runs(
        tracker,
        tracker.find_runs(st.experiment_id, {"aepipe.study": st.name}),
        lambda record: f"its process ({record.tags[LEASE_OWNER]}) died; ended when the study ran again",
    )
    for record in ended:
        remove_leftovers(tracker, record.run_id)
    return len(ended)


def best_trials(study) -> list:
    from optuna.trial import TrialState

    if len(study.directions) > 1:
        return study.best_trials
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [study.best_trial] if done else []


def records_results(st: Study) -> bool:
    """Whether this command should record the study's results (:func:`finish`). Commands on
    several machines share a study; one records: the one whose workers finished the last trial.
    A command that ran no trial records too (it was started again on a study whose results may
    never have been recorded), and so does each command of a study that ended short of its
    trials (a timeout)."""
    from optuna.trial import TrialState

    me = command_id()
    finished = st.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if len(finished) < st.settings.n_trials or not any(t.user_attrs.get(COMMAND_ATTR) == me for t in finished):
        return True
    last = max(finished, key=lambda t: (t.datetime_complete, t.number))
    return last.user_attrs.get(COMMAND_ATTR) == me


def finish(st: Study, pm: Any = None, device: str | None = None, register: bool = True, echo=print) -> None:
    """Record the study's results on its parent run: best params and values, Optuna's plots,
    the best trials' figures, models and datasets (``[tune] log_models = "best"``: rebuilt from
    their checkpoints, once), and the best trial's model in the Model Registry under the study's
    name."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from mlflow.exceptions import MlflowException

    from aepipe.tracking import default_tracker

    tracker = default_tracker()
    parent = tracker.open(st.parent_run_id)
    try:
        _record(st, tracker, parent, pm, device, register, echo)
        retrying(lambda: parent.finish("FINISHED"), (MlflowException, AepipeError))
    except BaseException as exc:  # the parent run never stays RUNNING: it ends FAILED with the reason
        why = str(exc) if isinstance(exc, AepipeError) else f"{type(exc).__name__}: {exc}"
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            tracker.end_run(
                st.parent_run_id, status, f"recording the study's results failed: {' '.join(why.split())[:2000]}"
            )
        except Exception:  # noqa: BLE001 - the store itself may be what failed: the first error is the one to tell
            pass
        raise


def _record(st: Study, tracker, parent, pm, device, register, echo) -> None:
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from mlflow.exceptions import MlflowException
    from optuna.trial import TrialState

    study = st.study
    best = best_trials(study)
    metrics = st.settings.objective_metrics
    summary = {
        "study": st.name,
        "finished_trials": finished_count(study),
        "states": {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState},
        "best": [{"number": t.number, "values": dict(zip(metrics, t.values)), "params": t.params,
                  "run_id": t.user_attrs.get(RUN_ATTR)} for t in best],
    }
    parent.log_text(json.dumps(summary, indent=2), "study/best_trials.json")
    if best:
        top = best[0]
        tags = {f"best.{k}": str(v) for k, v in top.params.items()}
        tags.update({"best.trial": str(top.number), "best.run_id": top.user_attrs.get(RUN_ATTR, "")})
        # commands on two machines may record the results at the same moment: a tracking
        # server's database then refuses one of two simultaneous first writes of a tag
        retrying(lambda: parent.set_tags(tags), MlflowException)
        parent.log_metrics({f"best.{m}": v for m, v in zip(metrics, top.values)}, 0)
    figures = []
    try:
        if len(study.directions) == 1:
            figures.append((ovm.plot_optimization_history(study).figure, "study/optimization_history.png"))
        else:
            figures.append((ovm.plot_pareto_front(study, target_names=metrics).figure, "study/pareto_front.png"))
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) >= 2 and len(st.distributions) >= 1:
            target = None if len(study.directions) == 1 else (lambda t: t.values[0])
            figures.append((ovm.plot_param_importances(study, target=target, target_name=metrics[0]).figure,
                            "study/param_importances.png"))
        if len(study.directions) == 1:
            figures.append((ovm.plot_intermediate_values(study).figure, "study/intermediate_values.png"))
    except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn must not lose the study
        parent.set_tags({"aepipe.plot_error": f"{type(exc).__name__}: {exc}"[:500]})
    for fig, name in figures:
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        parent.log_figure(fig, name)
        plt.close(fig)
    missing = log_best_artifacts(st, best, pm, device, echo) if st.settings.log_models == "best" else set()
    if register and best and best[0].user_attrs.get(RUN_ATTR) and best[0].user_attrs[RUN_ATTR] not in missing:
        check_registry(st)
        tracker.register_model(model_name(st), best[0].user_attrs[RUN_ATTR],
                               tags={"aepipe.study": st.name, "aepipe.study_run_id": st.parent_run_id})


def log_best_artifacts(st: Study, best: list, pm: Any, device: str | None, echo=print) -> set[str]:
    """The figures, model and dataset of each best trial's run that lacks them, from the run's
    checkpoint (see :meth:`aepipe.training.Trainer.log_artifacts`), on the data the worker kept.
    Returns the runs that could not get them (each told in one line and tagged on the parent
    run; the study's results are recorded all the same)."""
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking import default_tracker
    from aepipe.training.loop import ARTIFACTS_TAG, Trainer

    tracker = default_tracker()
    trainer = Trainer(None, pm or get_plugin_manager(), device=device, tracker=tracker, data_cache=st.data_cache)
    missing = set()
    for trial in best:
        run_id = trial.user_attrs.get(RUN_ATTR)
        if not run_id or tracker.get_run(run_id).tags.get(ARTIFACTS_TAG):
            continue
        try:
            trainer.log_artifacts(run_id)
        except Exception as exc:  # noqa: BLE001 - one trial's files that cannot be rebuilt must not lose the study's results
            missing.add(run_id)
            why = str(exc) if isinstance(exc, AepipeError) else f"{type(exc).__name__}: {exc}"
            note = (f"trial {trial.number} (run {run_id}): its figures and model could not be logged: "
                    f"{' '.join(why.split())[:500]}")
            tracker.open(st.parent_run_id).set_tags({"aepipe.artifacts_error": note[:5000]})
            echo(f"warning: {note}")
    return missing


def summary_rows(study, metrics: list[str], limit: int = 10) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) > 1:
        ranked = study.best_trials
    else:
        sign = 1 if study.direction.name == "MINIMIZE" else -1
        ranked = sorted(done, key=lambda t: sign * t.value)
    return [{"trial": t.number, **{m: v for m, v in zip(metrics, t.values)}, **t.params,
             "seconds": t.duration.total_seconds() if t.duration else None, "run_id": t.user_attrs.get(RUN_ATTR, "")}
            for t in ranked[:limit]]


def end_trial_run(trial, reason: str) -> None:
    """End the MLflow run of a trial whose worker died FAILED, with ``reason``, and remove what
    the dead process left on this machine (its checkpoint: the trial is retried from scratch)."""
    from aepipe.tracking import default_tracker

    run_id = trial.user_attrs.get(RUN_ATTR)
    if run_id:
        tracker = default_tracker()
        tracker.end_run(run_id, "FAILED", reason)
        remove_leftovers(tracker, run_id)


def remove_leftovers(tracker, run_id: str) -> None:
    """Delete a dead run's local checkpoint folder, if it is on this machine."""
    import shutil

    shutil.rmtree(tracker.checkpoint_dir(run_id), ignore_errors=True)
