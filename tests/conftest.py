from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"

os.environ.setdefault("MPLBACKEND", "Agg")
# torch on one CPU thread, here and in every process a test starts: the suite's models are tiny,
# and on two cores torch's two threads mostly wait for each other (a digits VAE step measured up to
# 15x slower with two under load). Tests that are about threads or processes set their own.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: the overrides that keep a test's run to what it checks: no model, images or dataset logged
QUIET = ["tracking.log_model=false", "tracking.log_images=false", "tracking.log_dataset=false"]
#: the same, the model logged (for tests that read it back)
QUIET_KEEP_MODEL = ["tracking.log_images=false", "tracking.log_dataset=false"]


def cli_sets(overrides: list[str]) -> list[str]:
    """``overrides`` as the command line's ``--set`` options."""
    return [arg for override in overrides for arg in ("--set", override)]


@pytest.fixture(scope="session", autouse=True)
def shared_feature_cache(tmp_path_factory):
    """One cache of trained feature networks (``AEPIPE_CACHE_DIR``) for the whole session: the
    ``domain`` space's classifier of a dataset is trained once, not once per store."""
    folder = tmp_path_factory.mktemp("aepipe-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AEPIPE_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory) -> Path:
    """One tracking store for the tests that only read back their own runs (saves MLflow's
    database set-up per test)."""
    return tmp_path_factory.mktemp("shared") / "mlruns"


@pytest.fixture
def store(shared_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_store(monkeypatch, shared_store)


@pytest.fixture
def at_store(store, monkeypatch: pytest.MonkeyPatch):
    """For a module whose ``store`` fixture trains into a store of its own (a dict with its ``home``):
    that store, pointed at for the test."""
    use_store(monkeypatch, store["home"])
    return store


def use_store(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point aepipe's tracking at the local store in ``home`` (undone with ``monkeypatch``)."""
    from aepipe import tracking

    monkeypatch.setenv("AEPIPE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.store.forget()
    return home


@contextlib.contextmanager
def store_at(home: Path):
    """The local store in ``home`` for a block: a module fixture that trains once into a store of
    its own, whose tests then read it back with :func:`use_store`."""
    with pytest.MonkeyPatch.context() as mp:
        yield use_store(mp, home)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one CPU thread for a module's tests and module fixtures (see ``zoo_shared``);
    a module asks for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    from zoo_shared import one_torch_thread

    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def digits_vae(tmp_path_factory):
    """The plain VAE on the digits at ``zoo_shared.DIGITS_VAE``'s budget, trained once for every
    module that compares a variant against it; read-only."""
    from zoo_shared import train_digits_vae

    return train_digits_vae(tmp_path_factory.mktemp("digits-vae"))
