"""The use cases as the Python API: what the README shows a notebook doing, in-process, with the
same results the commands give (the CLI tests pin the commands themselves)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from conftest import PIPELINES, ROOT

FAST = ["train.epochs=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import aepipe
    from conftest import store_at

    home = tmp_path_factory.mktemp("api") / "mlruns"
    with store_at(home):
        run = aepipe.train(PIPELINES / "vae.toml", overrides=FAST)
    return home, run


@pytest.fixture
def at_store(trained, monkeypatch):
    from conftest import use_store

    use_store(monkeypatch, trained[0])
    return trained[1]


def test_the_readme_example_names_the_api():
    """Every ``aepipe.NAME(`` of the README's Python example is in the package's API."""
    import aepipe

    text = (ROOT / "README.md").read_text()
    block = text[text.index("The same from Python"):]
    block = block[block.index("```python"): block.index("```", block.index("```python") + 3)]
    names = set(re.findall(r"aepipe\.(\w+)\(", block))
    assert names and names <= set(aepipe.__all__), names - set(aepipe.__all__)
    for name in names:
        assert callable(getattr(aepipe, name))


def test_train_takes_a_file_or_a_resolved_pipeline(at_store, tmp_path):
    import aepipe

    run = at_store
    assert run.epochs == 2 and run.metrics["test_neg_elbo"] > 0
    pm = aepipe.get_plugin_manager()
    again = aepipe.train(aepipe.resolve(pm, PIPELINES / "vae.toml", [*FAST, "tracking.log_model=false"]), pm)
    assert again.run_id != run.run_id
    assert again.metrics["test_loss"] == pytest.approx(run.metrics["test_loss"], rel=1e-5)  # seeded: the same run


def test_train_without_a_pipeline_or_a_run_is_a_config_error():
    import aepipe

    with pytest.raises(aepipe.ConfigError, match="give a PIPELINE file to train, or --resume RUN_ID"):
        aepipe.train(None)


def test_encode_reconstruct_and_sample_write_what_the_model_gives(at_store, tmp_path):
    import torch

    import aepipe

    run = at_store
    raw = run.data.x_test[:7].numpy() * 16.0  # the digits' raw units are 0..16
    np.save(tmp_path / "x.npy", raw)
    # paths as text, as in the README
    written = aepipe.encode(run.run_id, str(tmp_path / "x.npy"), str(tmp_path / "codes.npy"))
    codes = np.load(tmp_path / "codes.npy")
    assert written.count == 7 and written.shape == codes.shape == (7, run.model.spec.code_dim)
    model = aepipe.load_model(run.run_id)  # the run's model, rebuilt from its files
    with torch.no_grad():
        assert np.allclose(codes, model.represent(run.data.x_test[:7], None, "code").numpy(), atol=1e-5)
    aepipe.reconstruct(run.run_id, tmp_path / "x.npy", tmp_path / "recon.npy")
    recon = np.load(tmp_path / "recon.npy")
    assert recon.shape == raw.shape and recon.min() >= 0.0 and recon.max() <= 16.0
    out = aepipe.sample(run.run_id, 5, tmp_path / "s.npy", grid=tmp_path / "s.png", seed=3)
    assert (
        np.load(tmp_path / "s.npy").shape == (5, 1, 8, 8)
        and out.grid == tmp_path / "s.png"
        and out.grid.stat().st_size > 0
    )
    aepipe.sample(run.run_id, 5, tmp_path / "t.npy", seed=3)
    assert np.array_equal(np.load(tmp_path / "s.npy"), np.load(tmp_path / "t.npy"))  # seeded
    with pytest.raises(aepipe.ConfigError, match="--what nope: run .* offers"):
        aepipe.encode(run.run_id, tmp_path / "x.npy", tmp_path / "c.npy", what="nope")


def test_a_study_from_python_and_its_summary(tmp_path, monkeypatch):
    import aepipe
    from conftest import use_store

    use_store(monkeypatch, tmp_path / "mlruns")
    lines: list[str] = []
    study = aepipe.run_study(PIPELINES / "vanilla.toml", overrides=("train.epochs=1",), study_name="api",
                             n_trials=2, echo=lines.append)
    summary = aepipe.study_summary(study)
    assert summary["study"] == "api" and summary["states"] == {"COMPLETE": 2}
    assert summary["best"] and summary["parent_run_id"] == study.parent_run_id
    assert any("0 of 2 trials finished" in line for line in lines), lines


def test_check_plugins_is_the_commands_check(aepipe_pm):
    import aepipe

    skipped: list[str] = []
    line = aepipe.check_plugins(aepipe_pm, "vanilla", echo=skipped.append)
    assert line == "plugin vanilla: every component passes the conformance suite"
    with pytest.raises(aepipe.PluginError, match="--plugin nope: no such plugin"):
        aepipe.check_plugins(aepipe_pm, "nope")


def test_the_cli_holds_no_library_logic():
    """The commands' bodies call use cases: no array, model or study work left in the CLI."""
    text = "".join(p.read_text() for p in Path(__import__("aepipe.cli").cli.__file__).parent.glob("*.py"))
    for needle in ("import torch", "import numpy", "np.", "load_model(", "select_device(", "resolve(",
                   "check_writable("):
        assert needle not in text, needle
