"""``aepipe tune``: Optuna studies over pipeline settings, every trial a tracked training run.

Optuna does the sampling, pruning and storing. One owner per concern:

- :mod:`.study`: the ``[tune]`` section, its search space and the study's name, checked before any
  trial runs, and the study's identity: the fingerprint of what it tunes, which a study reopened
  with another pipeline, objective or space is refused on;
- :mod:`.worker`: the worker loop (claiming trials so that the study holds exactly ``n_trials``
  finished ones across any number of workers, failing and retrying the trials of dead workers);
- :mod:`.supervise`: the worker processes of one command (placement on GPUs, restarts, stopping
  with their command);
- :mod:`.record`: the study's parent run, its results and the healing of runs left RUNNING, all
  through the run tracker;
- :mod:`.optuna_adapter`: the only code touching Optuna's internals.
"""

from __future__ import annotations

import time  # noqa: F401 - tests pause the retries through aepipe.tune.time

from aepipe.tune.optuna_adapter import make_storage, open_study
from aepipe.tune.record import (best_trials, check_registry, end_trial_run, ensure_parent_run, finish, heal, model_name,
                                records_results, summary_rows)
from aepipe.tune.study import (
    COMMAND_ATTR,
    COMMAND_ENV,
    FAIL_ATTR,
    FINGERPRINT_ATTR,
    PARENT_ATTR,
    RUN_ATTR,
    WORKER_ATTR,
    ParamSpec,
    Study,
    TuneSettings,
    hold_to_fingerprint,
    command_id,
    default_name,
    fingerprint,
    default_storage_url,
    finished_count,
    mask_url,
    prepare_study,
    retrying,
)
from aepipe.tune.supervise import Placement, Workers, start_workers, stop_with_parent, worker_placement
from aepipe.tune.worker import ObjectiveError, recover_dead_trials, run_worker

__all__ = ["prepare_study", "open_study", "ensure_parent_run", "run_worker", "start_workers", "Workers", "finish",
           "records_results", "heal",
           "stop_with_parent", "summary_rows", "best_trials", "worker_placement", "Placement", "Study", "TuneSettings",
           "ParamSpec", "make_storage", "default_storage_url", "mask_url", "command_id", "recover_dead_trials",
           "end_trial_run", "finished_count", "ObjectiveError", "COMMAND_ATTR", "COMMAND_ENV", "FAIL_ATTR",
           "PARENT_ATTR", "RUN_ATTR",
           "WORKER_ATTR", "retrying", "FINGERPRINT_ATTR", "hold_to_fingerprint", "fingerprint", "default_name",
           "check_registry", "model_name"]
