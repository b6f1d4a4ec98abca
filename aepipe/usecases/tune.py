"""``tune``: a study over a pipeline's ``[tune]`` search space, run by this process or by
``n_workers`` worker processes of this machine, resumed where it stopped; and its summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from aepipe.errors import ConfigError


def open_pipeline_study(pipeline: Path, overrides: tuple[str, ...] = (), study_name: str | None = None,
                        storage: str | None = None,
                        n_trials: int | None = None, timeout: float | None = None, shared: bool | None = None,
                        pm: Any = None, allow_new_space: bool = False):
    """The study of ``pipeline``, its settings and name checked, its Optuna study opened (created
    if new) and held to what it tunes (:func:`aepipe.tune.study.hold_to_fingerprint`)."""
    from aepipe import secrets
    from aepipe.plugins import get_plugin_manager
    from aepipe.tune import optuna_adapter
    from aepipe.tune.study import hold_to_fingerprint, prepare_study

    secrets.remember(url=storage)
    secrets.check_url(storage, "--storage")
    st = prepare_study(pm or get_plugin_manager(), pipeline, overrides, study_name, storage, n_trials)
    if timeout is not None:
        st.settings.timeout = timeout
    optuna_adapter.open_study(st, st.base.settings.train.epochs, shared=shared)
    hold_to_fingerprint(st, allow_new_space)
    stem = Path(pipeline).stem
    if (study_name is None and st.settings.study is None and st.name != stem and not st.study.trials
            and optuna_adapter.has_study(st.study, stem)):
        st.hints.append(
            f"the study of {pipeline} is now named '{st.name}' (its experiment and its file's name); the "
            f"study '{stem}' in the same storage may be its study from before: --study {stem} goes on with it"
        )
    return st


def tune(pipeline: Path, overrides: tuple[str, ...] = (), study_name: str | None = None, storage: str | None = None,
         n_trials: int | None = None, n_workers: int = 1, timeout: float | None = None, device: str | None = None,
         worker: bool = False, echo: Callable[[str], None] = print, pm: Any = None, allow_new_space: bool = False):
    """Run the study of ``pipeline`` until it holds its ``n_trials`` finished trials (or ``timeout``
    seconds pass): every trial a tracked run nested under the study's parent run. ``worker``: this
    process is one of the workers another ``tune`` started. ``allow_new_space``: an existing study
    goes on with a changed search space. Returns the study (None for a worker)."""
    from aepipe import secrets
    from aepipe import tune as tuning
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking.health import check_writable
    from aepipe.training.loop import Interrupted

    secrets.remember(url=storage)  # masked in every message from here on
    secrets.check_url(storage, "--storage")
    if storage and storage.startswith("sqlite") and n_workers > 1:
        raise ConfigError("--storage sqlite:... is not safe for parallel workers (Optuna's advice); use the default "
                          "journal file (one machine) or postgresql+psycopg://... (many machines)")
    if worker:  # before anything slow: a command killed meanwhile is noticed at once
        tuning.stop_with_parent()
    spawn = n_workers > 1 and not worker
    # a command with workers opens the store (importing MLflow) once they started: their start-up overlaps its own
    check_writable("tune", open_store=not spawn)
    pm = pm or get_plugin_manager()
    st = open_pipeline_study(pipeline, overrides, study_name, storage, n_trials, timeout,
                             True if (worker or spawn) else None, pm, allow_new_space)
    if not worker:
        for note in [note for _, note in st.binding_notes] + st.hints:
            echo(f"note: {note}")
    # where the trials train, and the best trials' files are rebuilt
    placed_on = device or st.base.settings.train.device
    workers = (
        tuning.start_workers(st, pipeline, overrides, n_workers, timeout, device, placed_on, echo) if spawn else None
    )
    try:
        if spawn:
            check_writable("tune")
        if threads := os.environ.get("AEPIPE_NUM_THREADS"):
            import torch

            torch.set_num_threads(int(threads))
        tuning.check_registry(st)  # before any run starts: a refusal leaves nothing RUNNING
        tuning.ensure_parent_run(st)
        if not worker:
            healed = tuning.heal(st)
            if healed:
                echo(f"study '{st.name}': {healed} run(s) left RUNNING by a process that died marked KILLED")
            echo(f"study '{st.name}' in {tuning.mask_url(st.storage_url)}: {tuning.finished_count(st.study)} of "
                 f"{st.settings.n_trials} trials finished; MLflow parent run {st.parent_run_id}")
    except BaseException:
        if workers is not None:
            workers.stop()
        raise
    try:
        if workers is not None:
            workers.run(pm, st, device, echo)
        else:
            tuning.run_worker(pm, st, device=device, echo=echo)
    except Interrupted as exc:
        if not worker:  # the command was stopped: so is the study's parent run, until it runs again
            from aepipe.tracking import default_tracker

            default_tracker().end_run(st.parent_run_id, "KILLED", str(exc))
        raise
    if worker:
        return None
    if tuning.records_results(st):
        tuning.finish(st, pm, placed_on, echo=echo)
    else:
        echo(f"study '{st.name}' is complete; the command that ran its last trial records the results "
             f"on MLflow run {st.parent_run_id}")
    return st


def summary(st: Any) -> dict[str, Any]:
    """The study's name, parent run, trial counts by state and best trials (rows of their values,
    parameters and run ids)."""
    from aepipe import tune as tuning

    states: dict[str, int] = {}
    for t in st.study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return {"study": st.name, "parent_run_id": st.study.user_attrs.get(tuning.PARENT_ATTR), "states": states,
            "best": tuning.summary_rows(st.study, st.settings.objective_metrics)}
