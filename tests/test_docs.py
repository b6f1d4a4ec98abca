"""The plugin guide documents every hook with its exact arguments, and every hook is exercised."""

from __future__ import annotations

import re

from conftest import ROOT
from test_hooks import Recorder

GUIDE = (ROOT / "docs" / "plugins.md").read_text()


def _specs(pm):
    return {name: caller.spec.argnames for name, caller in vars(pm.hook).items() if name.startswith("aepipe_")}


def test_every_hook_is_documented_with_its_exact_arguments(aepipe_pm):
    documented = dict(re.findall(r"^#### `(aepipe_\w+)\(([^)]*)\)`", GUIDE, flags=re.M))
    for name, args in _specs(aepipe_pm).items():
        assert name in documented, f"{name} is missing from docs/plugins.md"
        assert [a.strip() for a in documented[name].split(",") if a.strip()] == list(args), (
            f"{name}: documented as ({documented[name]}), the spec takes {args}"
        )
    assert set(documented) <= set(_specs(aepipe_pm)), "the guide documents a hook that does not exist"


def test_every_hook_is_exercised_by_the_hook_test(aepipe_pm):
    implemented = {name for name in dir(Recorder) if name.startswith("aepipe_")}
    assert implemented == set(_specs(aepipe_pm)), (
        "tests/test_hooks.py's Recorder must implement (and so exercise) every hook"
    )


def test_every_hookspec_has_a_docstring(aepipe_pm):
    for name, caller in vars(aepipe_pm.hook).items():
        if name.startswith("aepipe_"):
            doc = caller.spec.function.__doc__ or ""
            assert ":returns:" in doc and all(f":param {a}:" in doc for a in caller.spec.argnames), name


def test_the_settings_tables_are_generated_from_the_code(aepipe_pm):
    """Every core and first-party setting, with its type and default, as the models define them:
    `python -m aepipe.guide` rewrites them; this fails when the guide is out of date."""
    from aepipe.guide import render_guide, settings_tables

    assert render_guide(GUIDE, settings_tables(aepipe_pm)) == GUIDE, (
        "docs/plugins.md is out of date: run python -m aepipe.guide"
    )
    for row in ("| `train.epochs` | `int` | `30` | >= 1 |", "| `model.regularizers.KEY.lam` | `float` |",
                "| `model.encoder.hidden` | `list[int > 0]` |", "| `tune.n_trials` | `int` | `20` | >= 1 |"):
        assert row in GUIDE, row


def test_the_testing_fixtures_and_functions_are_documented_with_their_signatures():
    import inspect

    import aepipe.testing as testing

    here = {testing.__name__, "aepipe.conformance"}  # the conformance suite, re-exported by aepipe.testing
    public = [name for name, obj in vars(testing).items()
              if not name.startswith("_") and callable(obj) and getattr(obj, "__module__", "") in here]
    assert {"aepipe_pm", "aepipe_plugin", "aepipe_store", "registered_components", "check_component",
            "check_variant"} <= set(public)
    for name in public:
        obj = getattr(testing, name)
        function = (
            getattr(obj, "__wrapped__", None)
            or getattr(getattr(obj, "_fixture_function", None), "__call__", None)
            or obj
        )
        function = getattr(obj, "_get_wrapped_function", lambda: function)()
        params = ", ".join(p if d is inspect.Parameter.empty else f"{p}={d!r}"
                           for p, d in ((p.name, p.default) for p in inspect.signature(function).parameters.values()))
        assert f"`{name}({params})`" in GUIDE, f"docs/plugins.md: document aepipe.testing.{name}({params})"
