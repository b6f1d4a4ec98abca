"""The local store: created and migrated once when several processes start on it together."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import PIPELINES, QUIET as QUIET_ALL

QUIET = [*QUIET_ALL, "train.epochs=1"]


@pytest.mark.slow
def test_processes_started_at_once_on_a_new_store_all_succeed(aepipe_store):
    """Three `aepipe train` at once on a store that does not exist yet (a shell loop with `&`):
    without the store's lock, two of three crashed in MLflow's schema migration."""
    assert not aepipe_store.exists()
    env = {**os.environ, "AEPIPE_HOME": str(aepipe_store)}
    args = [sys.executable, "-m", "aepipe.cli", "train", str(PIPELINES / "vanilla.toml"), "-q",
            *sum((["--set", q] for q in QUIET), [])]
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    run_ids = {out.strip() for out, _ in outs}
    assert len(run_ids) == 3

    from mlflow import MlflowClient

    from aepipe import tracking

    tracking.setup()
    client = MlflowClient()
    assert all(client.get_run(r).info.status == "FINISHED" for r in run_ids)
    assert len(client.search_experiments(filter_string="name = 'vanilla'")) == 1
