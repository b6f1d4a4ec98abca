"""Test support for aepipe and its plugins: the conformance suite (:func:`check_component`, from
:mod:`aepipe.conformance`, which runs without pytest: ``aepipe plugins --check`` on a plain install), and a pytest
plugin (loaded through the ``pytest11`` entry point, where pytest is installed) with fixtures for a
fresh plugin manager, registering a plugin for one test and an isolated tracking store, and a
hook that reports a :class:`CheckSkipped` as a skipped test.

Example::

    def test_my_encoder(aepipe_pm, aepipe_plugin):
        aepipe_plugin(my_plugin_module)
        assert "my-encoder" in aepipe_pm.registry.names("encoder")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

try:
    import pytest
except ImportError:  # a plain install: the conformance suite runs; the fixtures are plain functions
    pytest = None


from aepipe.conformance import (  # noqa: F401  (the conformance suite, re-exported for plugins)
    CheckSkipped,
    check_component,
    check_variant,
    registered_components,
)


if pytest is not None:

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(item):
        try:
            return (yield)
        except CheckSkipped as exc:
            pytest.skip(str(exc))

    _fixture = pytest.fixture
else:
    def _fixture(function):
        return function


@_fixture
def aepipe_pm():
    """A fresh plugin manager with every installed plugin loaded."""
    from aepipe.plugins import get_plugin_manager

    return get_plugin_manager()


@_fixture
def aepipe_plugin(aepipe_pm) -> Callable[..., Any]:
    """Register a plugin (module or object with hookimpls) on ``aepipe_pm`` for this test."""

    def register(plugin: Any, name: str | None = None):
        aepipe_pm.register_plugin(plugin, name=name)
        aepipe_pm.validate()
        return aepipe_pm

    return register


@_fixture
def aepipe_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty local tracking store (SQLite and artifacts) in a temporary folder."""
    from aepipe import tracking

    home = tmp_path / "mlruns"
    monkeypatch.setenv("AEPIPE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.store.forget()
    return home


