"""``aepipe evaluate``: the eval_* vocabulary computed for stored runs, logged to them and cached,
and ``[evaluate]`` at the end of training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import store_at, use_store, QUIET_KEEP_MODEL
from helpers import eval_settings as _settings

QUIET = QUIET_KEEP_MODEL
K = 50  # the KL regularizer's importance samples for test_iw_nll, and eval's


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A VAE (8 epochs) and a plain autoencoder (3 epochs) on the digits, in a store of their own;
    the AE also as the one trial of a small study's experiment."""
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import train

    pm = get_plugin_manager()
    home = tmp_path_factory.mktemp("evaluate") / "mlruns"
    with store_at(home):
        vae = train(resolve(pm, tree={"variant": "vae"}, overrides=[*QUIET, "train.epochs=8", "tracking.experiment=ev",
                                                                     f"model.regularizers.kl.iw_samples={K}"]), pm)
        ae = train(
            resolve(pm, tree={"variant": "vanilla"}, overrides=[*QUIET, "train.epochs=3", "tracking.experiment=ev-ae"]),
            pm,
        )
    return {"home": home, "vae": vae, "ae": ae, "pm": pm}


def test_vocabulary_names_and_selection():
    from aepipe.evaluation import GROUPS, higher_is_better, key, metric_of, select

    assert key("fid") == "eval_fid" and key("fid", "inception") == "eval_fid_inception"
    assert key("fid", "domain", "gmm") == "eval_fid.gmm" and key("fid", "inception", "gmm") == "eval_fid_inception.gmm"
    assert metric_of("eval_fid_inception.gmm") == "fid" and metric_of("eval_precision.prior") == "precision"
    assert higher_is_better("eval_recall_inception") and not higher_is_better("eval_fid.gmm")
    assert higher_is_better("eval_mig") and not higher_is_better("eval_iw_nll")
    assert select(["fid", "eval_mse", "likelihood"]) == {"reconstruction": ("mse",), "likelihood": GROUPS["likelihood"],
                                                        "generation": ("fid",)}
    assert list(select(["all"])) == list(GROUPS)
    with pytest.raises(ValueError, match="unknown metric 'fidd'"):
        select(["fidd"])


def test_vae_metrics_agree_with_training_and_are_logged(at_store):
    from mlflow import MlflowClient

    from aepipe.evaluation.run import evaluate

    vae = at_store["vae"]
    s = _settings(metrics=["reconstruction", "likelihood", "representation"], iw_samples=K)
    (result,) = evaluate([vae.run_id], s)
    m = result.metrics
    # the same reconstruction error and the same importance-weighted bound as training's test metrics
    assert m["eval_mse"] == pytest.approx(vae.metrics["test_mse"], rel=1e-5)
    assert m["eval_iw_nll"] == pytest.approx(vae.metrics["test_iw_nll"], rel=2e-3)
    # a bound: -log p(x) <= -ELBO; the KL is the ELBO's gap to the reconstruction term, and positive
    assert m["eval_iw_nll"] <= m["eval_neg_elbo"] + 1e-6 and m["eval_kl"] > 0
    assert 0 < m["eval_ssim"] <= 1 and m["eval_psnr"] > 10 * np.log10(1 / 0.25)
    assert 0 <= m["eval_active_units"] <= 8 and 0.5 < m["eval_probe_accuracy"] <= 1 and 0 < m["eval_kmeans_nmi"] <= 1
    logged = MlflowClient().get_run(vae.run_id).data.metrics
    assert {k: logged[k] for k in m} == m  # exactly as computed


def test_more_importance_samples_tighten_the_bound(at_store):
    from aepipe.evaluation import basic
    from aepipe.evaluation.run import _load
    from aepipe.tracking import default_tracker

    model, data = _load(at_store["vae"].run_id, torch.device("cpu"), default_tracker(), at_store["pm"])
    x = data.test.x[:64]
    few = basic.likelihood(model, x, k=1, seed=1)
    many = basic.likelihood(model, x, k=5000, seed=1)  # drawn in chunks: K = 5,000 fits in memory
    assert many["iw_nll"] < few["iw_nll"]
    assert few["iw_nll"] == pytest.approx(few["neg_elbo"], rel=1e-6)  # K = 1: the bound is the ELBO
    assert many["neg_elbo"] == pytest.approx(few["neg_elbo"], rel=0.02)


def test_active_units_follow_burda(at_store):
    from aepipe.evaluation import basic
    from aepipe.evaluation.run import _load
    from aepipe.tracking import default_tracker

    model, data = _load(at_store["vae"].run_id, torch.device("cpu"), default_tracker(), at_store["pm"])
    with torch.no_grad():
        means = model.represent(data.test.x, None, "mean")
    expected = int((means.var(0) > 0.01).sum())
    assert basic.likelihood(model, data.test, k=2)["active_units"] == expected


def test_second_call_reads_the_cache(at_store, monkeypatch):
    from aepipe.evaluation import run as module

    ae = at_store["ae"]
    s = _settings(metrics=["reconstruction", "representation"])
    first = module.evaluate([ae.run_id], s)[0]
    assert not first.cached

    def boom(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr(module, "compute", boom)
    monkeypatch.setattr(module, "_load", boom)
    second = module.evaluate([ae.run_id], s)[0]
    assert second.cached and second.metrics == first.metrics
    with pytest.raises(AssertionError, match="computed again"):  # other settings: another entry
        module.evaluate([ae.run_id], _settings(metrics=["reconstruction"], seed=3))


def test_groups_that_do_not_apply_say_why(at_store):
    from aepipe.evaluation.run import evaluate

    (result,) = evaluate([at_store["ae"].run_id], _settings(metrics=["likelihood", "disentanglement", "mse"]))
    assert set(result.metrics) == {"eval_mse"}
    assert "no density" in result.skipped["likelihood"] and "factors" in result.skipped["disentanglement"]


def test_targets_experiments_and_errors(at_store):
    from aepipe.errors import RunNotFoundError
    from aepipe.evaluation.run import run_ids

    assert run_ids(["ev-ae"]) == [at_store["ae"].run_id]
    assert run_ids([at_store["vae"].run_id, "ev-ae"]) == [at_store["vae"].run_id, at_store["ae"].run_id]
    with pytest.raises(RunNotFoundError, match="'nothing-here': no run id, study or experiment of that name"):
        run_ids(["nothing-here"])


def test_cli_json_and_one_line_errors(at_store):
    from aepipe.cli import cli

    runner = CliRunner()
    ae = at_store["ae"].run_id
    out = runner.invoke(cli, ["evaluate", ae, "--metrics", "mse,bce", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert set(data[ae]) == {"eval_mse", "eval_bce"} and data[ae]["eval_mse"] == pytest.approx(
        at_store["ae"].metrics["test_mse"], rel=1e-5
    )
    bad = runner.invoke(cli, ["evaluate", ae, "--metrics", "fidd"])
    assert bad.exit_code == 2 and "unknown metric 'fidd'" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(cli, ["evaluate", "no-such-thing"])
    assert missing.exit_code == 2 and "no run id, study or experiment of that name" in missing.output
    assert len(missing.output.strip().splitlines()) == 1


def test_evaluate_section_runs_at_the_end_of_training(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from aepipe.config import resolve
    from aepipe.errors import ConfigError
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import train

    use_store(monkeypatch, tmp_path / "mlruns")
    pm = get_plugin_manager()
    result = train(resolve(pm,
                           tree={"variant": "vanilla",
                                 "evaluate": {"metrics": ["reconstruction", "likelihood", "probe_accuracy"]}},
                           overrides=[*QUIET, "train.epochs=2"]), pm)
    logged = MlflowClient().get_run(result.run_id).data.metrics
    assert logged["eval_mse"] == pytest.approx(logged["test_mse"], rel=1e-5)
    assert "eval_probe_accuracy" in logged and "eval_kmeans_nmi" not in logged  # only what was named
    assert "eval_iw_nll" not in logged  # a deterministic code: the likelihood group does not apply
    plain = train(resolve(pm, tree={"variant": "vanilla"}, overrides=[*QUIET, "train.epochs=1"]), pm)
    # none by default
    assert not [k for k in MlflowClient().get_run(plain.run_id).data.metrics if k.startswith("eval_")]
    with pytest.raises(ConfigError, match="evaluate.metrics.*unknown metric 'fid2'"):
        resolve(pm, tree={"variant": "vanilla", "evaluate": {"metrics": ["fid2"]}})


def test_compare_shows_the_eval_columns_in_vocabulary_order(at_store):
    from aepipe.compare import collect, columns, render
    from aepipe.evaluation.run import evaluate

    ae = at_store["ae"].run_id
    evaluate([ae], _settings(metrics=["representation", "reconstruction"]))
    rows = collect([ae], [])
    names = columns(rows)
    assert names.index("eval_mse") < names.index("eval_probe_accuracy") < names.index("train_seconds")
    text = render(rows, "markdown")
    header = text.splitlines()[0]
    assert "| eval_probe_accuracy ↑ |" in header and "| eval_mse |" in header  # which way is better
    assert f"{rows[0]['eval_mse']:.4g}" in text


def test_the_python_api_is_the_use_cases_the_commands_call():
    import aepipe
    from aepipe.evaluation import report, run
    from aepipe.usecases import fid
    from aepipe.zoo import run_zoo

    assert aepipe.evaluate is run.evaluate and aepipe.evaluation_settings is run.settings
    assert aepipe.build_report is report.build_report and aepipe.compare_image_sets is fid.compare_image_sets
    assert aepipe.run_zoo is run_zoo


def test_compare_shows_the_columns_asked_for(at_store):
    from aepipe.cli import cli

    ae = at_store["ae"].run_id
    runner = CliRunner()
    out = runner.invoke(cli, ["compare", ae, "--columns", "variant,test_mse", "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[0] == "variant,test_mse" and out.stdout.splitlines()[1].startswith("vanilla,")
    # any test metric the run logged, though not a default column: the loss `aepipe train` prints
    loss = runner.invoke(cli, ["compare", ae, "--columns", "variant,test_loss", "--format", "csv"])
    assert loss.exit_code == 0, loss.output
    variant, value = loss.stdout.splitlines()[1].split(",")
    assert variant == "vanilla" and float(value) == pytest.approx(at_store["ae"].metrics["test_loss"], rel=1e-6)
    bad = runner.invoke(cli, ["compare", ae, "--columns", "variant,eval_nothing"])
    assert bad.exit_code == 2 and "--columns: no run has eval_nothing" in bad.output and "test_loss" in bad.output
