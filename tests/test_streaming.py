"""Data held or streamed (issue 14, item 2): `data.in_memory = "auto" | true | false`. Both paths
draw the same split and the same batches, so a run's losses agree; `auto` says which it took and
why, as tags; a streamed run stops and resumes exactly; a file a worker cannot read is one line;
a `.npy` file is memory-mapped and never read whole; image datasets are read on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aepipe.components import Rows
from aepipe.config import resolve
from aepipe.data import scale, split_indices
from aepipe.errors import ConfigError, DataError
from aepipe.tracking.memory import MemoryTracker
from aepipe.training import load_data, train
from conftest import QUIET



@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """48 PNGs of 8x8 colour noise in two classes (dark, bright)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("stream") / "images"
    for label, base in (("dark", 40), ("bright", 200)):
        (root / label).mkdir(parents=True)
        for i in range(24):
            array = np.clip(base + rng.integers(-40, 40, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(array).save(root / label / f"{i:02d}.png")
    return root


def _pipeline(pm, data: dict, *overrides: str, variant: str = "vae"):
    model = (
        {"code_dim": 4, "encoder": {"hidden": [16]}, "decoder": {"hidden": [16]}}
        if variant == "vae"
        else {"code_dim": 4}
    )
    tree = {"variant": variant, "data": {"val_fraction": 0.25, "test_fraction": 0.25, **data}, "model": model,
            "train": {"batch_size": 8, "epochs": 3, "patience": 0}}
    return resolve(pm, tree=tree, overrides=[*QUIET, *overrides])


def _held_and_streamed(pm, data: dict, tmp_path, variant: str = "vae"):
    runs = {}
    for path in ("true", "false"):
        tracker = MemoryTracker(tmp_path / path)
        result = train(
            _pipeline(pm, data, f"data.in_memory={path}", "data.workers=1", variant=variant), pm, tracker=tracker
        )
        runs[path] = (result, tracker.runs[result.run_id])
    return runs["true"], runs["false"]


def test_held_and_streamed_images_give_the_same_split_batches_and_losses(aepipe_pm, folder, tmp_path):
    """uint8 images: held as uint8 and scaled per batch, or decoded by a worker per batch; the
    same rows in every split, and the same losses to the last bit."""
    (held, held_run), (streamed, streamed_run) = _held_and_streamed(
        aepipe_pm, {"name": "imagefolder", "path": str(folder)}, tmp_path
    )
    assert not held.data.streamed and streamed.data.streamed
    assert held.data.train.rows.dtype == torch.uint8  # a quarter of float32's memory
    for split in ("train", "val", "test"):
        a, b = getattr(held.data, split), getattr(streamed.data, split)
        assert np.array_equal(a.stored(), b.stored().reshape(len(b), -1)) and torch.equal(a.y, b.y), split
    assert [h["loss"] for h in held.history] == [h["loss"] for h in streamed.history]
    assert held.metrics["test_loss"] == streamed.metrics["test_loss"]
    assert held_run.tags["aepipe.data.path"] == "memory" and streamed_run.tags["aepipe.data.path"] == "streamed"
    assert streamed_run.tags["aepipe.data.reason"] == "data.in_memory = false"


def test_a_memory_mapped_npy_file_streams_with_losses_matching_the_held_run(aepipe_pm, tmp_path):
    """A float .npy file is opened memory-mapped (never read whole); streamed batches are scaled in
    float32, held ones in float64 once: losses agree to float rounding."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(96, 4)) @ rng.normal(size=(4, 20))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = {"name": "file", "path": str(tmp_path / "x.npy")}
    pipeline = _pipeline(aepipe_pm, data, variant="vanilla")
    raw = pipeline.dataset.cls(pipeline.dataset.config).load()
    assert isinstance(raw.x, np.memmap) and raw.value_range == (float(x.min()), float(x.max()))
    (held, _), (streamed, _) = _held_and_streamed(aepipe_pm, data, tmp_path, variant="vanilla")
    _, _, test_rows = split_indices(96, 0.25, 0.25, 0)
    assert torch.equal(held.data.test.x, torch.from_numpy(scale(x[test_rows], raw.value_range)))
    assert torch.allclose(torch.cat([b for b, _ in streamed.data.test.batches(7)]), held.data.test.x, atol=1e-6)
    for a, b in zip(held.history, streamed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert held.metrics["test_loss"] == pytest.approx(streamed.metrics["test_loss"], rel=1e-4)


def test_auto_streams_what_does_not_fit_and_says_why(aepipe_pm, folder, tmp_path, monkeypatch):
    from aepipe import limits

    auto = load_data(_pipeline(aepipe_pm, {"name": "imagefolder", "path": str(folder)}), torch.device("cpu"))
    assert not auto.streamed and auto.reason.startswith("auto: ") and " fits in 0.5 of the " in auto.reason
    # 48 images of 192 bytes: 9,216 bytes
    monkeypatch.setattr(limits, "memory_budget", lambda device, cgroup_root=None: limits.Budget(10_000, "a test"))
    tight = load_data(_pipeline(aepipe_pm, {"name": "imagefolder", "path": str(folder)}), torch.device("cpu"))
    assert tight.streamed and tight.reason == "auto: 9.22e-06 GB is more than 0.5 of the 1e-05 GB free on cpu"
    roomy = load_data(
        _pipeline(aepipe_pm, {"name": "imagefolder", "path": str(folder), "memory_fraction": 1.0}), torch.device("cpu")
    )
    assert not roomy.streamed
    monkeypatch.setattr(limits, "memory_budget", lambda device, cgroup_root=None: limits.Budget(5_000, "a test"))
    with pytest.raises(
        ConfigError, match=r"^data.in_memory = true: the data \(9.22e-06 GB\) needs about .* set data.in_memory = false"
    ):
        load_data(
            _pipeline(aepipe_pm, {"name": "imagefolder", "path": str(folder)}, "data.in_memory=true"),
            torch.device("cpu"),
        )


def test_a_streamed_split_has_no_whole_tensor_but_batches_heads_and_takes(aepipe_pm, folder):
    data = load_data(
        _pipeline(aepipe_pm, {"name": "imagefolder", "path": str(folder)}, "data.in_memory=false", "data.workers=0"),
        torch.device("cpu"),
    )
    with pytest.raises(DataError, match="is streamed .* split.batches"):
        data.x_train
    x, y = data.test.head(5)
    assert x.shape == (5, 192) and x.dtype == torch.float32 and y.shape == (5,)
    parts = list(data.test.batches(5))
    assert torch.equal(torch.cat([b for b, _ in parts]), data.test.take(torch.arange(len(data.test)))[0])
    assert torch.equal(parts[0][0], x)


def test_an_unreadable_image_met_while_streaming_is_one_line_naming_it(aepipe_pm, folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    files = sorted((broken / "bright").iterdir()) + sorted((broken / "dark").iterdir())  # the dataset's order
    train_rows, _, _ = split_indices(len(files), 0.0, 0.0, 0)
    victim = files[train_rows[-1]]  # not in the first-step check's batch: met by the worker, mid-epoch
    data = victim.read_bytes()
    start = data.index(b"IDAT") + 4
    victim.write_bytes(data[:start] + bytes(len(data) - start))  # the header (size) is intact, the pixels are zeros
    pipeline = _pipeline(
        aepipe_pm,
        {"name": "imagefolder", "path": str(broken), "val_fraction": 0.0, "test_fraction": 0.0},
        "data.in_memory=false",
        "data.workers=1",
    )
    tracker = MemoryTracker(tmp_path / "runs")
    with pytest.raises(DataError) as exc:
        train(pipeline, aepipe_pm, tracker=tracker)
    message = str(exc.value)
    assert "\n" not in message and str(victim) in message and "not a readable image" in message
    (run,) = tracker.runs.values()
    assert run.status == "FAILED" and str(victim) in run.tags["aepipe.error"]


def test_a_memory_mapped_file_of_python_objects_is_refused_as_such(aepipe_pm, tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(
        DataError, match=r"objects.npy: holds Python objects \(dtype object\), which aepipe does not unpickle"
    ):
        load_data(
            _pipeline(aepipe_pm, {"name": "file", "path": str(tmp_path / "objects.npy")}, variant="vanilla"),
            torch.device("cpu"),
        )


def test_a_nan_deep_in_a_memory_mapped_file_is_named_by_row(aepipe_pm, tmp_path, monkeypatch):
    from aepipe import arrays

    monkeypatch.setattr(arrays, "CHUNK_VALUES", 30)  # several chunks for 100 rows of 3
    x = np.ones((100, 3), dtype=np.float32)
    x[77, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=r"x.npy: row 77, column 2 is nan"):
        load_data(
            _pipeline(aepipe_pm, {"name": "file", "path": str(tmp_path / "x.npy")}, variant="vanilla"),
            torch.device("cpu"),
        )


def test_image_datasets_are_read_on_demand(aepipe_pm, folder, tmp_path):
    """Neither image dataset decodes its images when it loads: they are Rows, read in batches."""
    pipeline = _pipeline(aepipe_pm, {"name": "imagefolder", "path": str(folder)})
    raw = pipeline.dataset.cls(pipeline.dataset.config).load()
    assert isinstance(raw.x, Rows) and raw.x.shape == (48, 3, 8, 8)
    assert raw.x.read(np.array([47, 0, 47])).shape == (3, 3, 8, 8)
    pytest.importorskip("datasets")
    import datasets

    saved = tmp_path / "saved"
    datasets.load_dataset(str(folder), split="train").save_to_disk(str(saved))
    pipeline = _pipeline(aepipe_pm, {"name": "huggingface", "path": str(saved)})
    raw = pipeline.dataset.cls(pipeline.dataset.config).load()
    assert isinstance(raw.x, Rows) and raw.x.shape == (48, 3, 8, 8) and sorted(set(raw.y.tolist())) == [0, 1]
    data = load_data(
        _pipeline(aepipe_pm, {"name": "huggingface", "path": str(saved)}, "data.in_memory=false", "data.workers=1"),
        torch.device("cpu"),
    )
    seen = sum(xb.shape[0] for xb, _ in data.train.batches(10))
    assert data.streamed and seen == len(data.train) == 24


def test_in_memory_takes_auto_true_or_false_only(aepipe_pm, folder):
    for value in ('"yes"', "1"):
        with pytest.raises(ConfigError, match=r"'data.in_memory' = .*: expected \"auto\", true or false"):
            _pipeline(aepipe_pm, {"name": "imagefolder", "path": str(folder)}, f"data.in_memory={value}")


def test_aepipe_train_says_on_the_console_that_it_streams_and_why(store, tmp_path):
    from click.testing import CliRunner

    from aepipe.cli import cli
    from conftest import PIPELINES

    args = ["train", str(PIPELINES / "vanilla.toml"), "--set", "train.epochs=1", "--set", "data.in_memory=false",
            "--set", "data.workers=1", *[a for q in QUIET for a in ("--set", q)]]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "data 'digits': streamed by 1 DataLoader worker(s) (data.in_memory = false)" in result.stderr.splitlines()
    quiet = CliRunner().invoke(cli, [*args, "-q"])
    assert quiet.exit_code == 0 and "streamed" not in quiet.stderr
