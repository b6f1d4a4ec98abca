"""What aepipe relies on in Optuna beyond its public API, pinned: an Optuna upgrade that changes
any of it fails here, in one place (aepipe/tune/optuna_adapter.py)."""

from __future__ import annotations

import fcntl
import warnings

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from aepipe.tune import optuna_adapter as adapter

SPACE = {"x": FloatDistribution(0.0, 1.0)}


@pytest.fixture
def study(tmp_path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    adapter.quiet()
    return optuna.create_study(study_name="pinned", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))))


def test_a_trial_is_addressed_by_its_storage_id(study):
    trial = study.ask(SPACE)
    tid = adapter.trial_id(trial)
    assert isinstance(tid, int)
    frozen = study.get_trials(deepcopy=False)[0]
    assert adapter.trial_id(frozen) == tid and adapter.frozen(study, tid).number == trial.number
    adapter.set_attr(study, tid, "aepipe.fail_reason", "worker h:1 died")  # as another worker would
    assert study.get_trials(deepcopy=False)[0].user_attrs["aepipe.fail_reason"] == "worker h:1 died"


def test_failing_a_running_trial_once_and_retrying_it(study):
    trial = study.ask(SPACE)
    tid = adapter.trial_id(trial)
    assert adapter.fail(study, tid) is True
    assert adapter.fail(study, tid) is False  # finished already: another worker got there first
    adapter.retry(study, tid)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == trial.params
    assert waiting[0].system_attrs.get("failed_trial") == trial.number  # how aepipe's tests find a retry
    adapter.fail_stale(study)  # a journal file has no heartbeat: nothing happens
    assert study.trials[0].state == TrialState.FAIL


def test_heartbeats_on_an_rdb_storage_only(study, tmp_path):
    assert not adapter.Heartbeat(study, 0).enabled
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=2)
    rdb = optuna.create_study(study_name="beats", storage=storage)
    trial = rdb.ask(SPACE)
    with adapter.Heartbeat(rdb, adapter.trial_id(trial)) as beat:
        assert beat.enabled
    assert storage._get_stale_trial_ids(rdb._study_id) == []  # a fresh heartbeat: not stale


def test_the_claim_lock_of_a_journal_storage_excludes_other_processes(study, tmp_path):
    url = f"journal://{tmp_path / 'j.log'}"
    with adapter.claim_lock(study, url):
        with open(f"{tmp_path / 'j.log'}.claim.lock", "a") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(f"{tmp_path / 'j.log'}.claim.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


def test_a_journal_lock_held_by_a_killed_process_is_free_at_once(tmp_path):
    """A worker killed while it writes the journal (it reports every epoch) must not block the
    others: Optuna's own symlink lock outlives it for a 30 s grace period."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    path = tmp_path / "j.log"
    url = f"journal://{path}"
    storage = adapter.make_storage(url)
    optuna.create_study(study_name="held", storage=storage)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from aepipe.tune import optuna_adapter as a\n"
        f"lock = a.make_storage({url!r})._backend._lock\n"
        "lock.acquire(); print('held', flush=True); time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with open(f"{path}.lock.flock", "a") as probe:  # the holder's lock is a real flock
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    done = threading.Event()
    write = lambda: (storage.set_study_user_attr(storage.get_study_id_from_name("held"), "k", 1), done.set())  # noqa: E731
    threading.Thread(target=write, daemon=True).start()
    assert done.wait(10), "a write to the journal waited on the dead process's lock"
    assert storage.get_study_user_attrs(storage.get_study_id_from_name("held")) == {"k": 1}


def test_two_workers_recovering_the_same_dead_trial_do_it_once(study, monkeypatch):
    """Both saw the trial RUNNING with its worker dead; the second finds it finished and skips it
    (CI once caught the second one's write of the reason raising UpdateFinishedTrialError)."""
    import socket

    from aepipe.tune import worker

    trial = study.ask(SPACE)
    study._storage.set_trial_user_attr(adapter.trial_id(trial), worker.WORKER_ATTR, f"{socket.gethostname()}:999999999")
    seen = study.get_trials(deepcopy=True, states=(TrialState.RUNNING,))  # what the second worker saw
    monkeypatch.setattr(worker, "end_trial_run", lambda trial, reason: None)  # no run to end here
    assert worker.recover_dead_trials(study) == 1
    monkeypatch.setattr(study, "get_trials", lambda deepcopy=False, states=None: seen)
    assert worker.recover_dead_trials(study) == 0
    monkeypatch.undo()
    states = sorted(t.state.name for t in study.get_trials(deepcopy=False))
    assert states == ["FAIL", "WAITING"]  # failed once, retried once
