"""Plugin discovery, validation, blocking, tracing and the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import re
import types

import pytest

from aepipe import hookimpl
from aepipe.errors import ConfigError, PluginError
from aepipe.plugin_isolation import PluginWarning
from aepipe.plugins import get_plugin_manager

from helpers import GOOD_PLUGIN, make_distribution


@pytest.fixture
def thirdparty(tmp_path, monkeypatch):
    site = make_distribution(
        tmp_path / "site", "aepipe-flip", "1.2.3", {"flip": "aepipe_flip"}, {"aepipe_flip": GOOD_PLUGIN}
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_first_party_plugins_come_from_entry_points(aepipe_pm):
    names = set(aepipe_pm.infos)
    assert {"datasets", "vanilla", "weights"} <= names
    for name in ("datasets", "vanilla", "weights"):
        info = aepipe_pm.infos[name]
        assert info.dist == "aepipe" and info.entry_point.startswith(f"{name} = aepipe_plugins.")
    reg = aepipe_pm.registry
    assert {"one-layer", "mlp", "conv"} <= set(reg.names("encoder"))
    assert {"digits", "mnist5k", "mnist", "fashion-mnist", "file"} <= set(reg.names("dataset"))
    assert reg.source("regularizer", "weight-l1").name == "weights"


def test_third_party_distribution_is_discovered_through_its_entry_point(thirdparty):
    pm = get_plugin_manager()
    info = pm.infos["flip"]
    assert (info.dist, info.version, info.entry_point) == ("aepipe-flip", "1.2.3", "flip = aepipe_flip")
    assert "flip" in pm.registry.names("corruption")
    assert pm.registry.source("corruption", "flip").dist == "aepipe-flip"
    assert pm.hooks_of("flip") == ["aepipe_epoch_end", "aepipe_register_corruptions"]


def test_aepipe_plugins_command_lists_a_third_party_distribution(thirdparty):
    env = {**os.environ, "PYTHONPATH": str(thirdparty)}
    out = subprocess.run(
        [sys.executable, "-m", "aepipe.cli", "plugins", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["flip"]["distribution"] == "aepipe-flip" and rows["flip"]["version"] == "1.2.3"
    assert rows["flip"]["components"] == {"corruption": ["flip"]}
    assert "aepipe_register_encoders" in rows["vanilla"]["hooks"]


def _skipped(pm, name: str) -> str:
    """The one-line description of plugin ``name``'s failure; it is loaded no more."""
    assert name not in pm.infos and pm.get_plugin(name) is None
    return pm.failures[name].describe()


def test_duplicate_component_name_skips_the_third_party_plugin_naming_both(tmp_path, monkeypatch):
    dup = '''
from aepipe import hookimpl

@hookimpl
def aepipe_register_encoders(register):
    from aepipe_plugins.networks.basic import MLPEncoder

    class Other(MLPEncoder):
        name = "mlp"

    register(Other)
'''
    site = make_distribution(tmp_path / "site", "dup-dist", "0.1", {"dup": "dup_plugin"}, {"dup_plugin": dup})
    monkeypatch.syspath_prepend(str(site))  # found first on sys.path: aepipe's own still wins
    with pytest.warns(
        PluginWarning, match=r"plugin 'dup' \(dup-dist 0.1\), entry point 'dup = dup_plugin' failed to register"
    ):
        pm = get_plugin_manager()
        registry = pm.registry
    assert registry.source("encoder", "mlp").name == "vanilla"
    assert (
        "duplicate encoder name 'mlp': registered by plugin 'vanilla' (aepipe 0.1.0) and by plugin 'dup' (dup-dist 0.1)"
        in _skipped(pm, "dup")
    )
    monkeypatch.setenv("AEPIPE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError,
                       match=r"duplicate encoder name 'mlp': registered by plugin 'vanilla' \(aepipe 0.1.0\) and by "
                             r"plugin 'dup' \(dup-dist 0.1\)"):
        get_plugin_manager().registry


def test_a_plugin_that_fails_to_import_is_skipped_with_one_warning(tmp_path, monkeypatch):
    site = make_distribution(
        tmp_path / "site", "broken-dist", "9.9", {"broken": "broken_plugin"},
        {"broken_plugin": "import definitely_not_a_module_xyz\n"},
    )
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(PluginWarning) as caught:
        pm = get_plugin_manager()
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "plugin 'broken' (broken-dist 9.9), entry point 'broken = broken_plugin' failed to load" in msg
    assert "ModuleNotFoundError" in msg and "definitely_not_a_module_xyz" in msg
    assert "AEPIPE_BLOCK_PLUGINS=broken" in msg and "\n" not in msg
    assert "vanilla" in pm.infos and "mlp" in pm.registry.names("encoder")  # everything else works
    # a component nobody registered names the plugins that failed and might have provided it
    with pytest.raises(ConfigError,
                       match=r"unknown encoder 'wide'; available: .*; plugins that failed and might provide it: plugin "
                             r"'broken' \(broken-dist 9.9\): ModuleNotFoundError"):
        pm.registry.get("encoder", "wide")
    # a plugin author's CI: any failure is fatal
    monkeypatch.setenv("AEPIPE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as exc:
        get_plugin_manager()
    assert "plugin 'broken' failed to load" in str(exc.value) and "entry point 'broken = broken_plugin'" in str(
        exc.value
    )
    assert "broken-dist 9.9" in str(exc.value)
    # blocking it by environment variable: no failure at all
    monkeypatch.setenv("AEPIPE_BLOCK_PLUGINS", "broken")
    pm = get_plugin_manager()
    assert "broken" not in pm.infos and "vanilla" in pm.infos and pm.failures == {}


def test_unknown_hook_skips_the_plugin_suggesting_the_real_hook(aepipe_pm):
    bad = types.ModuleType("typo_plugin")

    @hookimpl
    def aepipe_register_encoderz(register):  # typo: no such hook
        pass

    bad.aepipe_register_encoderz = aepipe_register_encoderz
    aepipe_pm.register_plugin(bad, name="typo")
    with pytest.warns(PluginWarning):
        aepipe_pm.validate()
    assert _skipped(aepipe_pm, "typo").endswith(
        "failed to validate: implements an unknown hook 'aepipe_register_encoderz'; did you mean "
        "'aepipe_register_encoders'?")
    aepipe_pm.validate()  # nothing left to complain about


def test_unknown_hook_is_an_error_in_strict_mode(aepipe_pm, monkeypatch):
    monkeypatch.setenv("AEPIPE_STRICT_PLUGINS", "1")
    bad = types.ModuleType("typo_plugin")
    bad.aepipe_epoch_ned = hookimpl(lambda run, epoch, metrics: None)
    aepipe_pm.register_plugin(bad, name="typo")
    with pytest.raises(
        PluginError,
        match="plugin 'typo' implements an unknown hook 'aepipe_epoch_ned'; did you mean 'aepipe_epoch_end'",
    ):
        aepipe_pm.validate()


def test_hookimpl_with_wrong_argument_is_rejected(aepipe_pm):
    bad = types.ModuleType("badargs")

    @hookimpl
    def aepipe_register_encoders(register, extra):
        pass

    bad.aepipe_register_encoders = aepipe_register_encoders
    with pytest.raises(PluginError, match="plugin 'badargs' is invalid"):
        aepipe_pm.register_plugin(bad, name="badargs")


def test_registering_a_non_component_skips_the_plugin(aepipe_pm, aepipe_plugin):
    bad = types.ModuleType("notcomp")

    @hookimpl
    def aepipe_register_encoders(register):
        register(dict)

    bad.aepipe_register_encoders = aepipe_register_encoders
    aepipe_plugin(bad, name="notcomp")
    with pytest.warns(PluginWarning):
        registry = aepipe_pm.registry
    assert "mlp" in registry.names("encoder")
    assert re.search(
        r"registered .*dict.* as a encoder; expected a subclass of aepipe.components.Encoder",
        _skipped(aepipe_pm, "notcomp"),
    )


def test_a_registration_hook_that_raises_skips_the_plugin_and_what_it_registered(aepipe_pm, aepipe_plugin, monkeypatch):
    from aepipe_plugins.networks.basic import MLPEncoder

    class Half(MLPEncoder):
        name = "half"

    bad = types.ModuleType("raiser")
    bad.aepipe_register_encoders = hookimpl(lambda register: register(Half))

    @hookimpl
    def aepipe_register_priors(register):
        raise ValueError("no priors today")

    bad.aepipe_register_priors = aepipe_register_priors
    aepipe_plugin(bad, name="raiser")
    with pytest.warns(PluginWarning):
        registry = aepipe_pm.registry
    assert (
        "failed to register: plugin 'raiser' failed in aepipe_register_priors: ValueError: no priors today"
        in _skipped(aepipe_pm, "raiser")
    )
    assert "half" not in registry.names("encoder") and "mlp" in registry.names("encoder")
    monkeypatch.setenv("AEPIPE_STRICT_PLUGINS", "1")
    aepipe_pm.failures.clear()
    aepipe_plugin(bad, name="raiser2")
    with pytest.raises(
        PluginError, match="plugin 'raiser2' failed in aepipe_register_priors: ValueError: no priors today"
    ):
        aepipe_pm.registry


def test_disable_autoload_and_explicit_plugins(monkeypatch):
    monkeypatch.setenv("AEPIPE_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = get_plugin_manager()
    assert pm.infos == {}
    with pytest.raises(ConfigError, match=r"unknown encoder 'mlp'; available: \(none registered\)"):
        pm.registry.get("encoder", "mlp")
    monkeypatch.setenv("AEPIPE_PLUGINS", "vanilla")
    pm = get_plugin_manager()
    assert set(pm.infos) == {"vanilla"}


def test_trace_hooks_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("AEPIPE_TRACE_HOOKS", "1")
    pm = get_plugin_manager()
    pm.registry
    err = capsys.readouterr().err
    assert "aepipe_register_encoders" in err and "finish" in err


def test_aepipe_help_imports_no_heavy_package():
    code = (
        "import sys; sys.argv=['aepipe','--help']\n"
        "from aepipe.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','mlflow','optuna') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "train" in out.stdout and "plugins" in out.stdout


def test_a_variant_with_a_bad_default_is_blamed_on_the_plugin_that_registered_it(aepipe_pm, aepipe_plugin):
    from aepipe.config import resolve
    from aepipe.variant import Variant

    bad = types.ModuleType("badvariant")
    bad.aepipe_register_variants = hookimpl(lambda register: register(Variant(
        "wide-vae", defaults={"model": {"encoder": {"name": "mlp", "hidden": "wide"}}})))
    aepipe_plugin(bad, name="badvariant")
    with pytest.raises(ConfigError) as exc:
        resolve(aepipe_pm, tree={"variant": "wide-vae"})
    assert str(exc.value).startswith("variant 'wide-vae' of plugin 'badvariant': 'model.encoder.hidden' = 'wide'")
    assert "vanilla" not in str(exc.value)  # the plugin owning the encoder is not to blame


def test_plugins_check_lists_a_failed_plugin_and_exits_2(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from aepipe.cli import cli

    site = make_distribution(tmp_path / "site", "broken-dist", "9.9", {"broken": "broken_plugin"},
                             {"broken_plugin": "raise RuntimeError('boom at import')\n"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("AEPIPE_DISABLE_PLUGIN_AUTOLOAD", "1")  # nothing else to check: fast
    monkeypatch.setenv("AEPIPE_PLUGINS", "broken")
    with pytest.warns(PluginWarning):
        result = CliRunner().invoke(cli, ["plugins", "--check"])
    assert result.exit_code == 2
    assert ("problem: plugin 'broken' (broken-dist 9.9), entry point 'broken = broken_plugin' failed to load: "
            "RuntimeError: boom at import") in result.stderr
    assert "1 problem(s) in installed plugins" in result.stderr
    with pytest.warns(PluginWarning):
        listed = CliRunner().invoke(cli, ["plugins"])
    assert (
        listed.exit_code == 0
        and "broken  (broken-dist 9.9)  broken_plugin\n    FAILED to load: RuntimeError: boom at import"
        in listed.stdout
    )
