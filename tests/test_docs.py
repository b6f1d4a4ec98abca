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
        assert [a.strip() for a in documented[name].split(",") if a.strip()] == list(args), f"{name}: documented as ({documented[name]}), the spec takes {args}"
    assert set(documented) <= set(_specs(aepipe_pm)), "the guide documents a hook that does not exist"


def test_every_hook_is_exercised_by_the_hook_test(aepipe_pm):
    implemented = {name for name in dir(Recorder) if name.startswith("aepipe_")}
    assert implemented == set(_specs(aepipe_pm)), "tests/test_hooks.py's Recorder must implement (and so exercise) every hook"


def test_every_hookspec_has_a_docstring(aepipe_pm):
    for name, caller in vars(aepipe_pm.hook).items():
        if name.startswith("aepipe_"):
            doc = caller.spec.function.__doc__ or ""
            assert ":returns:" in doc and all(f":param {a}:" in doc for a in caller.spec.argnames), name
