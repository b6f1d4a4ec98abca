"""The pipeline aepipe stores with a model folder, a run and a checkpoint: written by ``dump``,
read back by :class:`aepipe.config.StoredPipeline` through the bounds of a pipeline file, with one
error line naming where. (The run artifact and the checkpoint are tested with the runs of
``test_store_binding.py``.)"""

from __future__ import annotations

import re

import pytest
import torch

from aepipe.artifacts import load_model_dir, write_model_dir
from aepipe.config import MAX_DEPTH, MAX_FILE_BYTES, StoredPipeline, dump, read_stored, resolve
from aepipe.errors import ConfigError
from aepipe.model import build_model
from aepipe.training import load_data

from conftest import PIPELINES

#: a TOML value nested deeper than a pipeline may be
DEEP = "x = " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
TOO_DEEP = rf"nested more than {MAX_DEPTH} levels deep"


@pytest.fixture(scope="module")
def pm():
    from aepipe.plugins import get_plugin_manager

    return get_plugin_manager()


def test_a_dumped_pipeline_reads_back_equal(pm):
    """Every shipped pipeline, resolved, dumped and read back: the same settings and components."""
    for path in sorted(PIPELINES.glob("*.toml")):
        pipeline = resolve(pm, path)
        text = dump(pipeline)
        back = read_stored(pm, text, "the dump")
        assert back.as_dict() == pipeline.as_dict(), path.name
        assert back.settings == pipeline.settings, path.name
        for ours, theirs in zip(
            [back.dataset, *back.components.values(), *back.regularizers.values()],
            [pipeline.dataset, *pipeline.components.values(), *pipeline.regularizers.values()],
            strict=True,
        ):
            assert (ours.kind, ours.name, ours.cls, ours.config, ours.path, ours.warmup_epochs) == \
                (theirs.kind, theirs.name, theirs.cls, theirs.config, theirs.path, theirs.warmup_epochs), path.name
        assert dump(back) == text and back.source == "the dump"


def test_a_stored_pipeline_is_bounded_like_a_pipeline_file():
    with pytest.raises(ConfigError, match=rf"^run 0123: the pipeline: line 1: {TOO_DEEP}"):
        StoredPipeline.loads(DEEP, "run 0123: the pipeline")
    with pytest.raises(
        ConfigError, match=rf"^run 0123: the pipeline: {MAX_FILE_BYTES + 1} characters; a pipeline may hold at most"
    ):
        StoredPipeline.loads("#" * (MAX_FILE_BYTES + 1), "run 0123: the pipeline")


@pytest.fixture
def model_folder(pm, tmp_path):
    pipeline = resolve(pm, PIPELINES / "vanilla.toml")
    torch.manual_seed(0)
    model = build_model(pipeline, load_data(pipeline, torch.device("cpu")))
    return write_model_dir(model, pipeline, pm, tmp_path / "aepipe-model")


@pytest.mark.parametrize("where", ["", "run 0123"])
def test_a_model_folders_oversized_or_over_nested_pipeline_is_refused_in_one_line(pm, model_folder, where):
    named = re.escape(where or str(model_folder))
    assert load_model_dir(model_folder, pm, where=where).spec.code_dim > 0  # as written, it loads
    stored = model_folder / "pipeline.toml"
    text = stored.read_text()
    stored.write_text(text + DEEP)
    with pytest.raises(ConfigError, match=rf"^{named}: aepipe-model/pipeline.toml: line \d+: {TOO_DEEP}[^\n]*$"):
        load_model_dir(model_folder, pm, where=where)
    stored.write_text(text + "#" * MAX_FILE_BYTES)
    with pytest.raises(ConfigError, match=rf"^{named}: aepipe-model/pipeline.toml: {len(text) + MAX_FILE_BYTES} bytes; "
                                          rf"a pipeline file may hold at most {MAX_FILE_BYTES} \(1 MiB\)$"):
        load_model_dir(model_folder, pm, where=where)


class _FolderTracker:
    """A tracker whose runs are FINISHED and whose artifacts are the folders of ``artifacts``."""

    def __init__(self, artifacts):
        self.artifacts = artifacts

    def get_run(self, run_id):
        from types import SimpleNamespace

        return SimpleNamespace(status="FINISHED")

    def download(self, run_id, path, dst):
        import shutil

        found = self.artifacts.get(path)
        return None if found is None else shutil.copytree(found, dst / path)


def test_an_evaluated_run_reads_its_stored_pipeline_once(pm, model_folder, monkeypatch):
    import aepipe.config.stored as stored
    from aepipe.evaluation.run import _load

    calls = []
    real = stored.resolve
    monkeypatch.setattr(stored, "resolve", lambda *a, **kw: calls.append(kw["source"]) or real(*a, **kw))
    model, data = _load("0123", torch.device("cpu"), _FolderTracker({"aepipe-model": model_folder}), pm)
    assert calls == ["run 0123: aepipe-model/pipeline.toml"]
    assert model.spec.code_dim > 0 and len(data.test) > 0 and data.name == "digits"


@pytest.mark.parametrize("text, message", [
    (DEEP, rf"line 1: {TOO_DEEP}"),
    ("#" * (MAX_FILE_BYTES + 1), rf"{MAX_FILE_BYTES + 1} bytes; a pipeline file may hold at most {MAX_FILE_BYTES}"),
    ("components = ", r"not valid TOML"),
])
def test_a_fitted_samplers_settings_are_read_within_the_bounds_of_a_pipeline_file(pm, model_folder, tmp_path, text,
                                                                                 message):
    from aepipe.runs import load_sampler
    from aepipe.sampling import FOLDER

    folder = tmp_path / "gmm"
    folder.mkdir()
    (folder / "sampler.toml").write_text(text)
    torch.save({}, folder / "weights.pt")
    model = load_model_dir(model_folder, pm)
    tracker = _FolderTracker({f"{FOLDER}/gmm": folder})
    with pytest.raises(ConfigError, match=rf"^run 0123: {FOLDER}/gmm/sampler\.toml: {message}[^\n]*$"):
        load_sampler("0123", model, "gmm", tracker=tracker, pm=pm)
