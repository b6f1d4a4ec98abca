"""Every hook is exercised: one plugin implements them all and a run, a study and the CLI call
each; a hook that raises fails the run, naming its plugin."""

from __future__ import annotations

import time
import types

import click
import pytest
from click.testing import CliRunner

from aepipe import hookimpl
from aepipe.config import resolve
from aepipe.errors import PluginError
from aepipe.training import train

from conftest import PIPELINES, QUIET as QUIET_ALL

QUIET = [*QUIET_ALL, "train.epochs=2"]


class Recorder:
    """Implements every aepipe hook and records the calls."""

    def __init__(self):
        self.calls: dict[str, list] = {}

    def _seen(self, hook, **kwargs):
        self.calls.setdefault(hook, []).append(kwargs)

    @hookimpl
    def aepipe_register_datasets(self, register):
        from aepipe_plugins.datasets.sources import Digits

        class SmallDigits(Digits):
            """The first 300 digits."""
            name = "small-digits"

            def load(self):
                raw = super().load()
                raw.x, raw.y = raw.x[:300], raw.y[:300]
                return raw

        register(SmallDigits)
        self._seen("aepipe_register_datasets")

    @hookimpl
    def aepipe_register_encoders(self, register):
        self._seen("aepipe_register_encoders")

    @hookimpl
    def aepipe_register_decoders(self, register):
        self._seen("aepipe_register_decoders")

    @hookimpl
    def aepipe_register_bottlenecks(self, register):
        self._seen("aepipe_register_bottlenecks")

    @hookimpl
    def aepipe_register_samplers(self, register):
        self._seen("aepipe_register_samplers")

    @hookimpl
    def aepipe_register_corruptions(self, register):
        self._seen("aepipe_register_corruptions")

    @hookimpl
    def aepipe_register_regularizers(self, register):
        self._seen("aepipe_register_regularizers")

    @hookimpl
    def aepipe_register_priors(self, register):
        self._seen("aepipe_register_priors")

    @hookimpl
    def aepipe_register_feature_spaces(self, register):
        self._seen("aepipe_register_feature_spaces")

    @hookimpl
    def aepipe_register_variants(self, register):
        from aepipe import Variant

        register(Variant("recorded", "vanilla on small-digits", {"data": {"name": "small-digits"},
                                                                 "model": {"encoder": {"name": "one-layer"},
                                                                           "decoder": {"name": "one-layer"}}}))
        self._seen("aepipe_register_variants")

    @hookimpl
    def aepipe_run_start(self, run):
        run.log_text("started", "recorder.txt")
        self._seen("aepipe_run_start", run_id=run.run_id)

    @hookimpl(wrapper=True)
    def aepipe_train_epoch(self, run, epoch):
        """A hook wrapper around every epoch: it times the epoch aepipe trains."""
        started = time.perf_counter()
        metrics = yield
        self._seen("aepipe_train_epoch", epoch=epoch, seconds=time.perf_counter() - started, keys=sorted(metrics))
        return metrics

    @hookimpl
    def aepipe_epoch_end(self, run, epoch, metrics):
        self._seen("aepipe_epoch_end", epoch=epoch, metrics=metrics)
        return {"recorder.epoch": float(epoch)}

    @hookimpl
    def aepipe_run_end(self, run, metrics):
        self._seen("aepipe_run_end", metrics=metrics)
        return {"recorder": 42.0}

    @hookimpl
    def aepipe_trial_end(self, study, number, state, values, params, run_id):
        self._seen(
            "aepipe_trial_end", study=study, number=number, state=state, values=values, params=params, run_id=run_id
        )

    @hookimpl
    def aepipe_cli_commands(self, cli):
        @click.command(name="recorded-hello")
        def hello():
            """Say hello."""
            click.echo("hello from the recorder")

        cli.add_command(hello)
        self._seen("aepipe_cli_commands")


def test_every_hook_is_called(aepipe_pm, aepipe_plugin, store, tmp_path, monkeypatch):
    rec = Recorder()
    aepipe_plugin(rec, name="recorder")
    result = train(resolve(aepipe_pm, tree={"variant": "recorded"}, overrides=QUIET), aepipe_pm)
    assert result.metrics["test_recorder"] == 42.0
    from mlflow import MlflowClient

    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(result.run_id, "val_recorder.epoch")] == [1, 2]
    assert rec.calls["aepipe_run_start"][0]["run_id"] == result.run_id
    # the wrapper saw every epoch, around aepipe's own training of it
    timed = rec.calls["aepipe_train_epoch"]
    assert [c["epoch"] for c in timed] == [1, 2] and all(c["seconds"] > 0 for c in timed)
    assert {"loss", "recon"} <= set(timed[0]["keys"])
    assert [c["epoch"] for c in rec.calls["aepipe_epoch_end"]] == [1, 2]
    assert "val_loss" in rec.calls["aepipe_epoch_end"][0]["metrics"]
    assert "test_loss" in rec.calls["aepipe_run_end"][0]["metrics"]

    # a study calls aepipe_trial_end after each trial
    from aepipe import tune

    path = tmp_path / "t.toml"
    path.write_text('variant = "recorded"\n[train]\nepochs = 2\n[tracking]\nlog_model = false\nlog_images = '
                    'false\nlog_dataset = false\n[tune]\nn_trials = 2\npruner = "none"\n[tune.space]\n"train.lr" = { '
                    'type = "float", low = 0.001, high = 0.01 }\n')
    st = tune.prepare_study(aepipe_pm, path)
    tune.open_study(st, epochs=2)
    tune.ensure_parent_run(st)
    tune.run_worker(aepipe_pm, st, echo=lambda line: None)
    ends = rec.calls["aepipe_trial_end"]
    assert [c["number"] for c in ends] == [0, 1] and all(c["state"] == "COMPLETE" and c["run_id"] for c in ends)
    assert set(ends[0]["params"]) == {"train.lr"}

    # the CLI hook adds a command
    from aepipe.cli import group as cli_group

    monkeypatch.setattr(cli_group, "plugin_manager", lambda: aepipe_pm)
    group = click.Group(name="aepipe")
    cli_group.add_plugin_commands(group)
    out = CliRunner().invoke(group, ["recorded-hello"])
    assert out.exit_code == 0 and "hello from the recorder" in out.output

    for hook in aepipe_pm.hook.__dict__:
        if hook.startswith("aepipe_"):
            assert hook in rec.calls, f"{hook} was never called"


def _wrapper_that_raises(run, epoch):
    yield
    raise RuntimeError("kaboom")


@pytest.mark.parametrize("hook", ["aepipe_run_start", "aepipe_epoch_end", "aepipe_run_end", "aepipe_train_epoch"])
def test_a_hook_that_raises_fails_the_run_naming_the_plugin(aepipe_pm, aepipe_plugin, store, hook):
    plugin = types.ModuleType("explodes")

    def boom(**kwargs):
        raise RuntimeError("kaboom")

    impl = {"aepipe_run_start": hookimpl(lambda run: boom()),
            "aepipe_epoch_end": hookimpl(lambda run, epoch, metrics: boom()),
            "aepipe_run_end": hookimpl(lambda run, metrics: boom()),
            "aepipe_train_epoch": hookimpl(wrapper=True)(_wrapper_that_raises)}[hook]
    setattr(plugin, hook, impl)
    aepipe_plugin(plugin, name="explodes")
    with pytest.raises(PluginError, match=rf"plugin 'explodes' raised in {hook}: RuntimeError: kaboom"):
        train(resolve(aepipe_pm, PIPELINES / "vanilla.toml", QUIET), aepipe_pm)
    from mlflow import MlflowClient

    c = MlflowClient()
    run = c.search_runs(
        [c.get_experiment_by_name("vanilla").experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    assert run.info.status == "FAILED"
    assert "plugin 'explodes' raised in" in run.data.tags["aepipe.error"]
