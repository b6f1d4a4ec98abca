"""Test support for aepipe and its plugins: a pytest plugin (loaded through the ``pytest11``
entry point) with fixtures for a fresh plugin manager, registering a plugin for one test and an
isolated tracking store.

Example::

    def test_my_encoder(aepipe_pm, aepipe_plugin):
        aepipe_plugin(my_plugin_module)
        assert "my-encoder" in aepipe_pm.registry.names("encoder")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture
def aepipe_pm():
    """A fresh plugin manager with every installed plugin loaded."""
    from aepipe.plugins import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture
def aepipe_plugin(aepipe_pm) -> Callable[..., Any]:
    """Register a plugin (module or object with hookimpls) on ``aepipe_pm`` for this test."""

    def register(plugin: Any, name: str | None = None):
        aepipe_pm.register_plugin(plugin, name=name)
        aepipe_pm.validate()
        return aepipe_pm

    return register


@pytest.fixture
def aepipe_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty local tracking store (SQLite and artifacts) in a temporary folder."""
    from aepipe import tracking

    home = tmp_path / "mlruns"
    monkeypatch.setenv("AEPIPE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "_set_by_us", None)
    return home
