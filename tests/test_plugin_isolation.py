"""A plugin cannot end, silence or hijack a command: ``SystemExit`` (or any ``BaseException``)
from its import or its hooks is one error naming it, never exit 0; a slow import is named; what
it prints stays off the JSON on stdout; a metric name a store would refuse names the plugin."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import PIPELINES, QUIET as QUIET_ALL
from helpers import make_distribution

QUIET = [*QUIET_ALL, "train.epochs=2", "train.patience=0", 'tracking.experiment="plugin-isolation"']
SETS = sum((["--set", q] for q in QUIET), [])

EXIT_ON_IMPORT = "import sys\nsys.exit(0)\n"
HOOK = '''
import sys
from aepipe import hookimpl


@hookimpl
def aepipe_epoch_end(run, epoch, metrics):
    {body}
'''


def _install(tmp_path, monkeypatch, name: str, source: str, *, only: bool = False):
    site = make_distribution(
        tmp_path / "site", f"{name}-dist", "0.3", {name: f"{name}_plugin"}, {f"{name}_plugin": source}
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, f"{name}_plugin", raising=False)  # another test's module of that name
    if only:  # nothing else to load: fast
        monkeypatch.setenv("AEPIPE_DISABLE_PLUGIN_AUTOLOAD", "1")
        monkeypatch.setenv("AEPIPE_PLUGINS", name)
    return site


def _cli(*args: str):
    import warnings

    from aepipe.cli import cli
    from aepipe.console import one_line_warnings

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        one_line_warnings()
        return CliRunner().invoke(cli, list(args))


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:")]


def _runs(experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_a_plugin_that_exits_on_import_is_skipped_and_named_never_exit_0(tmp_path, monkeypatch):
    from aepipe.errors import PluginError
    from aepipe.plugin_isolation import PluginWarning
    from aepipe.plugins import get_plugin_manager

    _install(tmp_path, monkeypatch, "quitter", EXIT_ON_IMPORT, only=True)
    with pytest.warns(
        PluginWarning,
        match=r"plugin 'quitter' \(quitter-dist 0.3\), entry point 'quitter = quitter_plugin' "
        r"failed to load: SystemExit\(0\) \(a plugin may not end the command\)",
    ):
        pm = get_plugin_manager()
    assert "quitter" in pm.failures and "quitter" not in pm.infos
    out = _cli("plugins", "--check")
    assert out.exit_code == 2, out.output
    assert any("quitter" in line and "SystemExit" in line for line in out.stderr.splitlines())
    monkeypatch.setenv("AEPIPE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"plugin 'quitter' failed to load .*SystemExit\(0\)"):
        get_plugin_manager()
    out = _cli("train", str(PIPELINES / "vanilla.toml"), "-q")
    assert out.exit_code == 2 and _errors(out.stderr) and "quitter" in _errors(out.stderr)[0], out.output


def test_the_aepipe_command_is_not_ended_by_a_plugin_import(tmp_path):
    """The installed command (``main``), in its own process: a plugin's ``sys.exit(0)`` at import
    neither ends ``--help`` nor makes ``plugins --check`` pass; its print goes to stderr."""
    site = make_distribution(tmp_path / "site", "quitter-dist", "0.3", {"quitter": "quitter_plugin"},
                             {"quitter_plugin": "print('hello from quitter')\n" + EXIT_ON_IMPORT})
    env = {**os.environ, "PYTHONPATH": str(site), "AEPIPE_HOME": str(tmp_path / "home"),
           "AEPIPE_DISABLE_PLUGIN_AUTOLOAD": "1", "AEPIPE_PLUGINS": "quitter"}
    command = [sys.executable, "-c", "from aepipe.cli import main; main()"]
    out = subprocess.run([*command, "plugins", "--check"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out
    assert "hello from quitter" not in out.stdout and "hello from quitter" in out.stderr
    assert any(
        line.startswith("problem: plugin 'quitter'") and "SystemExit(0)" in line for line in out.stderr.splitlines()
    ), out.stderr
    assert out.stderr.splitlines()[-1].startswith("Error: 1 problem(s)"), out.stderr
    out = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "Commands:" in out.stdout, out
    assert "Warning: plugin 'quitter'" in out.stderr and "SystemExit(0)" in out.stderr


@pytest.mark.parametrize("body, raised", [
    ("sys.exit(0)", r"SystemExit\(0\)"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ("raise GeneratorExit('out')", "GeneratorExit: out"),
])
def test_a_hook_that_exits_fails_the_run_and_the_command(tmp_path, monkeypatch, store, body, raised):
    """From a hook during a run: the run ends FAILED with the reason, the command exits 2 naming
    the plugin. (A user's Ctrl-C keeps its meaning: tests/test_lifecycle.py.)"""
    _install(tmp_path, monkeypatch, "quitter", HOOK.format(body=body))
    experiment = f"plugin-isolation-{tmp_path.name}"
    out = _cli("train", str(PIPELINES / "vanilla.toml"), *SETS, "--set", f'tracking.experiment="{experiment}"', "-q")
    assert out.exit_code == 2, out.output
    [line] = _errors(out.stderr)
    assert "plugin 'quitter' (quitter-dist 0.3) raised in aepipe_epoch_end" in line and re.search(raised, line), line
    [run] = _runs(experiment)
    assert run.info.status == "FAILED", "not left RUNNING"
    assert "quitter" in run.data.tags["aepipe.error"]


def test_what_a_plugin_prints_stays_off_the_json(tmp_path, monkeypatch, store):
    source = "print('imported, says the plugin')\n" + HOOK.format(body="print('epoch', epoch, 'says the plugin')")
    _install(tmp_path, monkeypatch, "chatty", source)
    out = _cli("train", str(PIPELINES / "vanilla.toml"), *SETS, "--json", "-q")
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)  # the JSON alone
    assert summary["run_id"]
    assert "says the plugin" in out.stderr and "says the plugin" not in out.stdout


def test_a_slow_plugin_import_is_named(tmp_path, monkeypatch):
    from aepipe.plugin_isolation import SlowPluginWarning
    from aepipe.plugins import get_plugin_manager

    _install(tmp_path, monkeypatch, "sloth", "import time\ntime.sleep(0.3)\n", only=True)
    monkeypatch.setenv("AEPIPE_SLOW_PLUGIN_SECONDS", "0.2")
    with pytest.warns(
        SlowPluginWarning,
        match=r"plugin 'sloth' \(sloth-dist 0.3\), entry point 'sloth = sloth_plugin', took "
        r"0\.\d s to import .*AEPIPE_BLOCK_PLUGINS=sloth",
    ):
        pm = get_plugin_manager()
    assert "sloth" in pm.infos  # slow, but loaded
    monkeypatch.setenv("AEPIPE_SLOW_PLUGIN_SECONDS", "30")
    monkeypatch.delitem(sys.modules, "sloth_plugin")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPluginWarning)
        get_plugin_manager()


def test_a_metric_name_a_store_refuses_names_the_plugin(tmp_path, monkeypatch, store):
    _install(tmp_path, monkeypatch, "ranker", HOOK.format(body="return {'ok': 1.0, 'rank<3': 2.0}"))
    experiment = f"plugin-isolation-{tmp_path.name}"
    out = _cli("train", str(PIPELINES / "vanilla.toml"), *SETS, "--set", f'tracking.experiment="{experiment}"', "-q")
    assert out.exit_code == 2, out.output
    [line] = _errors(out.stderr)
    assert "plugin 'ranker' (ranker-dist 0.3) returned the metric 'rank<3' from aepipe_epoch_end" in line, line
    assert "only letters, digits" in line
    [run] = _runs(experiment)
    assert run.info.status == "FAILED"


def test_metric_names_are_checked_as_a_store_checks_them():
    from aepipe.metric_names import bad_metric_name

    for good in ("val_loss", "a.b/c-d e:f", " spaced ", "x" * 250):
        assert bad_metric_name(good) is None, good
    for bad in ("a<b", "", "/abs", "a/../b", "a//b", "a/", ".", "x" * 251, "tab\t", 3):
        assert bad_metric_name(bad), bad


def test_a_components_metric_name_a_store_refuses_names_the_component():
    from aepipe.errors import PluginError
    from aepipe.training.metrics import component_metrics

    class Ranker:
        name = "ranker"

        def epoch_metrics(self, model, data):
            return {"fine": 1.0, "rank<3": 2.0}

    class Model:
        training = True

        def eval(self):
            self.training = False

        def train(self, mode=True):
            self.training = mode

        def components(self):
            return {"regularizers.ranker": Ranker()}

    with pytest.raises(
        PluginError,
        match=r"the regularizers.ranker 'ranker' \(from test_plugin_isolation\) returned the metric "
        r"'rank<3' from epoch_metrics, a name a tracking store refuses",
    ):
        component_metrics(Model(), "epoch", None)


def test_a_users_ctrl_c_while_a_plugins_hook_runs_is_still_the_users(tmp_path, monkeypatch):
    """A second Ctrl-C comes through the run's signal handler, whatever code it lands in: the run is
    KILLED by the user (the README's stop and resume), not blamed on the plugin."""
    import signal
    import time
    import types

    from aepipe import hookimpl
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking.memory import MemoryTracker
    from aepipe.training import Interrupted, epoch, train

    monkeypatch.setattr(epoch, "ECHO_SECONDS", 0.0)
    plugin = types.ModuleType("impatient")

    @hookimpl
    def aepipe_epoch_end(run, epoch, metrics):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)  # the second: interrupts at once, inside this hook
            time.sleep(1)

    plugin.aepipe_epoch_end = aepipe_epoch_end
    pm = get_plugin_manager()
    pm.register(plugin, name="impatient")
    tracker = MemoryTracker(tmp_path)
    with pytest.raises(Interrupted, match="interrupted at epoch"):
        train(resolve(pm, PIPELINES / "vanilla.toml", QUIET), pm, tracker=tracker)
    [run] = tracker.runs.values()
    assert run.status == "KILLED"


COMPONENT = '''
import sys
from aepipe import hookimpl
from aepipe.components import Regularizer

CALLS = [0]


class Quit(Regularizer):
    name = "quit-after"

    def penalty(self, step):
        CALLS[0] += 1
        if CALLS[0] > {after}:
            sys.exit(0)
        return None


@hookimpl
def aepipe_register_regularizers(register):
    register(Quit)
'''


@pytest.mark.parametrize("after", [0, 30])
def test_a_component_that_exits_fails_the_run_and_the_command(tmp_path, monkeypatch, store, after):
    """A component's own code (not a hook) calling ``sys.exit(0)``: before the run starts (the
    first-step check, ``after = 0``) or during it: exit 2 naming the plugin, nothing RUNNING."""
    _install(tmp_path, monkeypatch, "exiter", COMPONENT.format(after=after))
    experiment = f"component-exit-{tmp_path.name}"
    out = _cli("train", str(PIPELINES / "vanilla.toml"), *SETS, "--set", f'tracking.experiment="{experiment}"',
               "--set", 'model.regularizers.quit-after={}', "-q")
    assert out.exit_code == 2, out.output
    [line] = _errors(out.stderr)
    assert "plugin 'exiter'" in line and "SystemExit(0)" in line, line
    assert all(run.info.status != "RUNNING" for run in _runs(experiment))
    if after:
        [run] = _runs(experiment)
        assert run.info.status == "FAILED" and "exiter" in run.data.tags["aepipe.error"]
