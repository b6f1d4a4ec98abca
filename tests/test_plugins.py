"""Plugin discovery, validation, blocking, tracing and the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

from aepipe import hookimpl
from aepipe.errors import ConfigError, PluginError
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
    out = subprocess.run([sys.executable, "-m", "aepipe.cli", "plugins", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["flip"]["distribution"] == "aepipe-flip" and rows["flip"]["version"] == "1.2.3"
    assert rows["flip"]["components"] == {"corruption": ["flip"]}
    assert "aepipe_register_encoders" in rows["vanilla"]["hooks"]


def test_duplicate_component_name_names_both_plugins(tmp_path, monkeypatch):
    dup = '''
from aepipe import hookimpl

@hookimpl
def aepipe_register_encoders(register):
    from aepipe_plugins.vanilla.nets import MLPEncoder

    class Other(MLPEncoder):
        name = "mlp"

    register(Other)
'''
    site = make_distribution(tmp_path / "site", "dup-dist", "0.1", {"dup": "dup_plugin"}, {"dup_plugin": dup})
    monkeypatch.syspath_prepend(str(site))
    pm = get_plugin_manager()
    with pytest.raises(PluginError, match=r"duplicate encoder name 'mlp': registered by plugin '(vanilla|dup)' \((aepipe 0.1.0|dup-dist 0.1)\) and by plugin '(vanilla|dup)'") as exc:
        pm.registry
    assert "dup-dist 0.1" in str(exc.value) and "aepipe 0.1.0" in str(exc.value)


def test_broken_plugin_is_one_clear_error(tmp_path, monkeypatch):
    site = make_distribution(
        tmp_path / "site", "broken-dist", "9.9", {"broken": "broken_plugin"},
        {"broken_plugin": "import definitely_not_a_module_xyz\n"},
    )
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError) as exc:
        get_plugin_manager()
    msg = str(exc.value)
    assert "plugin 'broken' failed to load" in msg
    assert "entry point 'broken = broken_plugin'" in msg and "broken-dist 9.9" in msg
    assert "ModuleNotFoundError" in msg and "definitely_not_a_module_xyz" in msg
    assert "AEPIPE_BLOCK_PLUGINS=broken" in msg and "\n" not in msg
    # blocking it by environment variable lets everything else load
    monkeypatch.setenv("AEPIPE_BLOCK_PLUGINS", "broken")
    pm = get_plugin_manager()
    assert "broken" not in pm.infos and "vanilla" in pm.infos


def test_broken_plugin_makes_cli_exit_2_with_one_line(tmp_path):
    site = make_distribution(tmp_path / "site", "broken-dist", "9.9", {"broken": "broken_plugin"}, {"broken_plugin": "raise RuntimeError('boom at import')\n"})
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-m", "aepipe.cli", "plugins"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "plugin 'broken' failed to load" in lines[0] and "boom at import" in lines[0]
    assert "Traceback" not in out.stderr


def test_unknown_hook_fails_validation_naming_the_plugin(aepipe_pm):
    bad = types.ModuleType("typo_plugin")

    @hookimpl
    def aepipe_register_encoderz(register):  # typo: no such hook
        pass

    bad.aepipe_register_encoderz = aepipe_register_encoderz
    aepipe_pm.register_plugin(bad, name="typo")
    with pytest.raises(PluginError, match="plugin 'typo' implements an unknown hook"):
        aepipe_pm.validate()


def test_hookimpl_with_wrong_argument_is_rejected(aepipe_pm):
    bad = types.ModuleType("badargs")

    @hookimpl
    def aepipe_register_encoders(register, extra):
        pass

    bad.aepipe_register_encoders = aepipe_register_encoders
    with pytest.raises(PluginError, match="plugin 'badargs' is invalid"):
        aepipe_pm.register_plugin(bad, name="badargs")


def test_registering_a_non_component_is_rejected(aepipe_pm, aepipe_plugin):
    bad = types.ModuleType("notcomp")

    @hookimpl
    def aepipe_register_encoders(register):
        register(dict)

    bad.aepipe_register_encoders = aepipe_register_encoders
    aepipe_plugin(bad, name="notcomp")
    with pytest.raises(PluginError, match=r"plugin 'notcomp' registered .*dict.* as a encoder; expected a subclass of aepipe.components.Encoder"):
        aepipe_pm.registry


def test_registration_hook_that_raises_names_the_plugin(aepipe_pm, aepipe_plugin):
    bad = types.ModuleType("raiser")

    @hookimpl
    def aepipe_register_priors(register):
        raise ValueError("no priors today")

    bad.aepipe_register_priors = aepipe_register_priors
    aepipe_plugin(bad, name="raiser")
    with pytest.raises(PluginError, match="plugin 'raiser' failed in aepipe_register_priors: ValueError: no priors today"):
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
