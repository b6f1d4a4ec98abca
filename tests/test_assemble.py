"""A run assembled once (aepipe.training.assemble): every component's setup() runs once, the seed
is set once, the first-step check leaves the run bit for bit as one without it, and the pipeline
is serialised to TOML once, the same text in the checkpoint, the run's artifact and the model folder."""

from __future__ import annotations

import types

import torch

from aepipe import hookimpl
from aepipe.config import Pipeline, resolve
from aepipe.tracking.memory import MemoryTracker
from aepipe.training import assemble as assembly
from aepipe.training import train
from aepipe.training.state import load_checkpoint

QUIET = {"log_model": False, "log_images": False, "log_dataset": False}
SETUPS: list[str] = []


def _counting() -> types.ModuleType:
    """A regularizer that counts its setup() calls, and whose training penalty moves a buffer of
    its own and draws from torch's generator: what a first-step check that left a trace would
    change in the run."""
    plugin = types.ModuleType("counting")

    @hookimpl
    def aepipe_register_regularizers(register):
        from aepipe.components import Regularizer

        class Counting(Regularizer):
            name = "counting"

            def __init__(self, config, spec):
                super().__init__(config, spec)
                self.register_buffer("seen", torch.zeros(()))

            def setup(self, model):
                SETUPS.append(self.name)

            def penalty(self, step):
                if step.training:
                    self.seen += 1
                return 1e-2 * step.z.pow(2).mean() * (1.0 + torch.rand(()) + 1e-3 * self.seen)

        register(Counting)

    plugin.aepipe_register_regularizers = aepipe_register_regularizers
    return plugin


def _pipeline(pm, tracking=None):
    tree = {
        "variant": "denoising",
        "data": {"name": "digits"},
        "model": {"code_dim": 4, "regularizers": {"counting": {}}},
        "train": {"epochs": 2, "batch_size": 256, "device": "cpu", "patience": 0},
        "tracking": {**QUIET, **(tracking or {})},
    }
    return resolve(pm, tree=tree)


def test_setup_runs_once_and_the_seed_is_set_once(aepipe_pm, aepipe_plugin, monkeypatch, tmp_path):
    aepipe_plugin(_counting(), name="counting")
    seeds = []
    real_seed = assembly.seed_everything
    monkeypatch.setattr(assembly, "seed_everything", lambda seed: (seeds.append(seed), real_seed(seed)))
    SETUPS.clear()
    result = train(_pipeline(aepipe_pm), aepipe_pm, tracker=MemoryTracker(tmp_path))
    assert result.status == "FINISHED"
    assert SETUPS == ["counting"]  # sizing on the meta device runs no setup; the first-step check uses the run's model
    assert seeds == [0]


def test_the_first_step_check_leaves_the_run_as_one_without_it(aepipe_pm, aepipe_plugin, monkeypatch, tmp_path):
    """With a corruption (random noise), a buffer moved by each training step and a penalty
    that draws from torch's generator, the check's pass would show in the weights, the buffer and
    every later draw: restored, the run equals one whose check was skipped, bit for bit."""
    aepipe_plugin(_counting(), name="counting")
    pipeline = _pipeline(aepipe_pm)
    checked = train(pipeline, aepipe_pm, tracker=MemoryTracker(tmp_path / "a"))
    monkeypatch.setattr(assembly, "first_step_check", lambda *args, **kwargs: [])
    unchecked = train(pipeline, aepipe_pm, tracker=MemoryTracker(tmp_path / "b"))
    a, b = checked.model.state_dict(), unchecked.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [
        k for k in a if not torch.equal(a[k], b[k])
    ]
    assert float(a["regularizers.counting.seen"]) == 2 * -(-len(checked.data.train) // 256)  # the training steps only
    assert [h["loss"] for h in checked.history] == [h["loss"] for h in unchecked.history]
    assert checked.metrics["test_loss"] == unchecked.metrics["test_loss"]


def test_the_pipeline_is_serialised_once_and_the_same_text_is_kept_everywhere(aepipe_pm, monkeypatch, tmp_path):
    pipeline = resolve(aepipe_pm, tree={"variant": "vanilla", "data": {"name": "digits"}, "model": {"code_dim": 4},
                                        "train": {"epochs": 1, "device": "cpu"},
                                        "tracking": {"log_model": True, "log_images": False, "log_dataset": False}})
    calls = []
    real = Pipeline.to_toml
    monkeypatch.setattr(Pipeline, "to_toml", lambda self: (calls.append(1), real(self))[1])
    tracker = MemoryTracker(tmp_path)
    result = train(pipeline, aepipe_pm, tracker=tracker)
    assert len(calls) == 1
    text = real(pipeline)
    for name in ("logged", "model", "checkpoint"):
        (tmp_path / name).mkdir()
    logged = tracker.download(result.run_id, "pipeline.toml", tmp_path / "logged")
    model_dir = tracker.download(result.run_id, "aepipe-model/pipeline.toml", tmp_path / "model")
    checkpoint = tracker.download(result.run_id, "checkpoint/checkpoint.pt", tmp_path / "checkpoint")
    assert logged is not None and logged.read_text() == text
    assert model_dir is not None and model_dir.read_text() == text
    assert checkpoint is not None and load_checkpoint(checkpoint, "test")[0].pipeline == text
