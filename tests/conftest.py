from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory) -> Path:
    """One tracking store for the tests that only read back their own runs (saves MLflow's
    database set-up per test)."""
    return tmp_path_factory.mktemp("shared") / "mlruns"


@pytest.fixture
def store(shared_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from aepipe import tracking

    monkeypatch.setenv("AEPIPE_HOME", str(shared_store))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking.store, "_set_by_us", None)
    return shared_store


def use_store(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point aepipe's tracking at the local store in ``home`` (undone with ``monkeypatch``)."""
    from aepipe import tracking

    monkeypatch.setenv("AEPIPE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking.store, "_set_by_us", None)
    return home


@contextlib.contextmanager
def store_at(home: Path):
    """The local store in ``home`` for a block: a module fixture that trains once into a store of
    its own, whose tests then read it back with :func:`use_store`."""
    with pytest.MonkeyPatch.context() as mp:
        yield use_store(mp, home)
