"""``aepipe evaluate`` at its edges: data a group or a feature space cannot judge, names checked
before training, and a cache that follows the model and the run's record."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import store_at, QUIET_KEEP_MODEL
from helpers import eval_settings as _settings

QUIET = QUIET_KEEP_MODEL


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A plain autoencoder on the digits with a test split of 4 examples, a VAE on a file of flat
    rows without labels and a plain autoencoder on streamed digits (data.in_memory = false), in a
    store of their own."""
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import train

    pm = get_plugin_manager()
    root = tmp_path_factory.mktemp("evaluate-edges")
    rows = np.random.default_rng(0).random((300, 12)).astype(np.float32)
    np.save(root / "flat.npy", rows)
    with store_at(root / "mlruns"):
        tiny = train(
            resolve(pm, tree={"variant": "vanilla"}, overrides=[*QUIET, "train.epochs=1", "data.test_fraction=0.002"]),
            pm,
        )
        flat = train(resolve(pm, tree={"variant": "vae"}, overrides=[
            *QUIET, "train.epochs=1", 'data.name="file"', f'data.path="{root / "flat.npy"}"']), pm)
        streamed = train(
            resolve(pm, tree={"variant": "vanilla"}, overrides=[*QUIET, "train.epochs=1", "data.in_memory=false"]), pm
        )
    return {"home": root / "mlruns", "tiny": tiny, "flat": flat, "streamed": streamed, "pm": pm}


def test_a_tiny_test_split_skips_what_it_cannot_judge(at_store):
    """4 test examples: k-means with 10 clusters and 5-neighbour precision/recall cannot run;
    those groups say why and the rest is measured (it was a scikit-learn traceback)."""
    from aepipe.evaluation.run import evaluate

    assert len(at_store["tiny"].data.test) == 4
    (result,) = evaluate([at_store["tiny"].run_id], _settings(metrics=["mse", "representation", "generation"]))
    assert set(result.metrics) == {"eval_mse"}
    assert "4 examples, fewer than its 10 classes" in result.skipped["representation"]
    assert "need more than 5" in result.skipped["generation"]


def test_a_feature_space_that_cannot_take_the_data_is_skipped(at_store):
    """No labels: the domain space does not apply; the other metrics are still measured and
    logged (the whole evaluation used to fail). An unknown space is still an error."""
    from mlflow import MlflowClient

    from aepipe.errors import ConfigError
    from aepipe.evaluation.run import evaluate

    run_id = at_store["flat"].run_id
    (result,) = evaluate([run_id], _settings(metrics=["mse", "fid"], seed=11))
    assert set(result.metrics) == {"eval_mse"}
    assert "no labels" in result.skipped["generation (domain)"]
    assert MlflowClient().get_run(run_id).data.metrics["eval_mse"] == result.metrics["eval_mse"]
    with pytest.raises(ConfigError, match="unknown feature 'nope'"):
        evaluate([run_id], _settings(metrics=["fid"], features=["nope"]))


def test_generation_reads_a_streamed_test_split(at_store):
    """A streamed split has no whole tensor (``.x``): generation reads it in batches (it failed),
    the training split too (authenticity); each metric comes with its bootstrap interval."""
    import math

    from aepipe.evaluation import bounds
    from aepipe.evaluation.run import evaluate

    names = ["fid", "precision", "authenticity"]
    (result,) = evaluate([at_store["streamed"].run_id], _settings(metrics=names, samples=50, bootstrap=20))
    assert set(result.metrics) == {k for n in names for k in (f"eval_{n}", *bounds(f"eval_{n}"))}
    for n in names:
        lo, hi = bounds(f"eval_{n}")
        assert result.metrics[lo] <= result.metrics[f"eval_{n}"] <= result.metrics[hi]
    assert math.isfinite(result.metrics["eval_fid"]) and 0 <= result.metrics["eval_authenticity"] <= 1


def test_evaluate_section_names_are_checked_before_training(at_store):
    from aepipe.config import resolve
    from aepipe.errors import ConfigError

    pm = at_store["pm"]
    with pytest.raises(ConfigError, match="evaluate.features: unknown feature 'nope'"):
        resolve(pm, tree={"variant": "vanilla", "evaluate": {"metrics": ["fid"], "features": ["nope"]}})
    with pytest.raises(ConfigError, match="evaluate.samplers: unknown sampler 'nope'"):
        resolve(pm, tree={"variant": "vanilla", "evaluate": {"metrics": ["fid"], "samplers": ["nope"]}})
    resolve(
        pm, tree={"variant": "vanilla", "evaluate": {"metrics": ["fid"], "features": ["domain"], "samplers": ["gmm"]}}
    )


def test_a_cache_hit_shows_on_the_run_again(at_store):
    """K = 2, then K = 3, then K = 2 again (read from the cache): the run shows K = 2's bound,
    what the last call reported (it kept K = 3's)."""
    from mlflow import MlflowClient

    from aepipe.evaluation.run import evaluate

    run_id = at_store["flat"].run_id
    (two,) = evaluate([run_id], _settings(metrics=["iw_nll"], iw_samples=2))
    (three,) = evaluate([run_id], _settings(metrics=["iw_nll"], iw_samples=3))
    assert two.metrics["eval_iw_nll"] != three.metrics["eval_iw_nll"]
    (again,) = evaluate([run_id], _settings(metrics=["iw_nll"], iw_samples=2))
    assert again.cached and again.metrics == two.metrics
    assert MlflowClient().get_run(run_id).data.metrics["eval_iw_nll"] == two.metrics["eval_iw_nll"]


def test_a_run_trained_further_is_evaluated_again(at_store):
    """``train --resume`` of a finished run changes its model under the same run id: the cached
    figures of the old model are not reused. (Last: it changes the tiny run.)"""
    from aepipe.evaluation.run import evaluate
    from aepipe.training import train

    run_id = at_store["tiny"].run_id
    s = _settings(metrics=["mse"])
    (before,) = evaluate([run_id], s)
    train(None, at_store["pm"], resume=run_id, overrides=("train.epochs=3",))
    (after,) = evaluate([run_id], s)
    assert not after.cached and after.metrics["eval_mse"] != before.metrics["eval_mse"]


def test_a_bad_device_names_the_option(at_store):
    """``--device`` is checked before any run is read, and the line names the option (it named
    the pipeline's train.device, and a cache hit let it pass)."""
    from click.testing import CliRunner

    from aepipe.cli import cli

    out = CliRunner().invoke(cli, ["evaluate", at_store["flat"].run_id, "--metrics", "mse", "--device", "gpu9", "-q"])
    assert out.exit_code == 2 and out.output.strip().splitlines() == [
        "Error: --device: 'gpu9' is not a device (use auto, cpu, cuda, cuda:N or mps)"
    ]


def test_zoo_checks_evaluation_names_before_training(at_store, monkeypatch):
    from aepipe import training
    from aepipe.errors import ConfigError
    from aepipe.zoo import run_zoo

    def boom(*a, **k):
        raise AssertionError("trained first")

    monkeypatch.setattr(training, "train", boom)
    with pytest.raises(ConfigError, match="unknown feature 'nope'"):
        run_zoo(
            "digits", 1, "zoo-edges", variants=["vanilla"], evaluate=_settings(features=["nope"]), pm=at_store["pm"]
        )
    with pytest.raises(ConfigError, match="unknown sampler 'nope'"):
        run_zoo(
            "digits", 1, "zoo-edges", variants=["vanilla"], evaluate=_settings(samplers=["nope"]), pm=at_store["pm"]
        )


def test_zoo_where_every_variant_is_skipped_shows_no_other_runs(at_store, tmp_path):
    """A conditional variant on data without labels is skipped; the table must not fall back to
    the store's other runs (collect of no runs shows the latest of every variant)."""
    from click.testing import CliRunner

    from aepipe.cli import cli

    flat = tmp_path / "flat.npy"
    np.save(flat, np.random.default_rng(1).random((60, 12)).astype(np.float32))
    out = CliRunner().invoke(
        cli, ["zoo", "--only", "cvae", "--epochs", "1", "--data", "file", "--set", f'data.path="{flat}"']
    )
    assert out.exit_code == 2, out.output
    assert "no variant trained on dataset 'file'" in out.output and not out.stdout.strip()
