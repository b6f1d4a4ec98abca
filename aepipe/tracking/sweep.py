"""Ending the runs whose process died: the sweep made by the first command that opens a store.

A process killed outright (SIGKILL, the out-of-memory killer, a power cut) cannot end its run:
the run stays RUNNING with a lease whose owner is gone. The first time an aepipe command opens
a store (:func:`aepipe.tracking.mlflow_tracker.open_store`), :func:`once` makes one search of the store's
RUNNING runs and ends those whose lease is dead by :func:`~aepipe.tracking.base.live_holder`'s
rule (the one ``--resume`` takes a run over by) KILLED, with the reason and the command that
continues them; their checkpoint is left where ``--resume`` reads it. Runs without a lease (a
study's parent run, runs other tools made) are never touched, and neither are a study's trial
runs: ``aepipe tune`` ends those with their trial (:func:`aepipe.tune.record.heal`, through
:func:`end_dead_runs` too) and retries the trial.

Two commands may sweep at once: each reads a run again just before ending it, and a run that a
``--resume`` took over meanwhile (its lease's owner changed) is put back to RUNNING at once.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from typing import Any, Callable

from aepipe.tracking.base import LEASE_OWNER, RunRecord, live_holder

log = logging.getLogger("aepipe.tracking")

#: a study's trial runs carry this tag; `aepipe tune` ends them (with their trial) itself
STUDY_TAG = "aepipe.study"
#: the name ``aepipe train`` gives a run's checkpoint in its checkpoint folder
CHECKPOINT = "checkpoint.pt"

_swept: set[str] = set()  # stores (tracking URIs) this process has swept


class RunEndedWarning(UserWarning):
    """A run left RUNNING by a process that died was ended by this command (shown as one line)."""


def end_dead_runs(tracker: Any, records: list[RunRecord], reason: Callable[[RunRecord], str],
                  status: str = "KILLED") -> list[RunRecord]:
    """End, with ``status`` and ``reason(record)``, those of ``records`` that are RUNNING under
    a lease no live process holds; returns the runs this call ended. Each run is read again
    before it is ended and after: one ended by another command meanwhile is left alone, and one
    that a ``--resume`` took over in between is put back to RUNNING."""
    ended = []
    for listed in records:
        owner = listed.tags.get(LEASE_OWNER)
        if listed.status != "RUNNING" or not owner or live_holder(listed) is not None:
            continue
        record = tracker.get_run(listed.run_id)
        if record.status != "RUNNING" or record.tags.get(LEASE_OWNER) != owner or live_holder(record) is not None:
            continue
        if not tracker.end_run(record.run_id, status, reason(record)):
            continue
        if tracker.get_run(record.run_id).tags.get(LEASE_OWNER) != owner:  # `--resume` took it over meanwhile
            tracker.reopen(record.run_id)
            continue
        ended.append(record)
    return ended


def sweep(tracker: Any) -> list[RunRecord]:
    """End KILLED every run of the store left RUNNING by a process that died (see the module);
    returns them. One search of the RUNNING runs; nothing more when none is dead."""
    from aepipe.files import remove_partial

    dead = [r for r in tracker.running_runs() if STUDY_TAG not in r.tags and LEASE_OWNER in r.tags]
    ended = end_dead_runs(tracker, dead, lambda record: _reason(tracker, record))
    for record in ended:
        if _on_this_host(record):  # what its writes left half-done: the checkpoint itself stays
            remove_partial(tracker.checkpoint_dir(record.run_id))
    return ended


def once(uri: str, make_tracker: Callable[[], Any]) -> None:
    """Sweep the store at ``uri`` once per process (the first time a command opens it). Never
    fails the command: a store that cannot be searched or written now is swept by a later one.
    Each run ended is told as one warning line."""
    if uri in _swept:
        return
    _swept.add(uri)
    try:
        tracker = make_tracker()
        ended = sweep(tracker)
    except Exception as exc:  # noqa: BLE001 - a read-only or unreachable store: left for a later command
        log.debug("the sweep of %s for runs of dead processes did not run: %s", uri, exc)
        return
    for record in ended:
        warnings.warn(f"run {record.run_id} was left RUNNING by {_owner_text(record)}, which died; marked KILLED "
                      f"({_next_step(tracker, record)})", RunEndedWarning, stacklevel=2)


def _on_this_host(record: RunRecord) -> bool:
    return record.tags.get(LEASE_OWNER, "").partition(":")[0] == socket.gethostname()


def _owner_text(record: RunRecord) -> str:
    host, _, rest = record.tags.get(LEASE_OWNER, "").partition(":")
    return f"process {rest.partition(':')[0]} on {host}"


def _next_step(tracker: Any, record: RunRecord) -> str:
    """How the run goes on: from its checkpoint where there is one."""
    command = f"aepipe train --resume {record.run_id}"
    if not _on_this_host(record):
        return f"if it wrote a checkpoint, continue it on {record.tags[LEASE_OWNER].partition(':')[0]} with: {command}"
    if (tracker.checkpoint_dir(record.run_id) / CHECKPOINT).is_file():
        return f"continue it from its last checkpoint with: {command}"
    return "it had written no checkpoint; train it again"


def _reason(tracker: Any, record: RunRecord) -> str:
    return (f"its process ({_owner_text(record)}) died while the run was RUNNING; ended by the next aepipe command "
            f"(pid {os.getpid()}); {_next_step(tracker, record)}")
