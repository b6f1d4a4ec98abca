"""Image data (issue 14): folders of PNG/JPEG files and Hugging Face datasets, each on its own
small generated data, with and without labels; the residual convolutional family on 32x32
colour images, and its composition with every family that takes an encoder and decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aepipe.config import resolve
from aepipe.errors import DataError
from aepipe.testing import check_component
from aepipe.training import load_data


def _image(rng, size=(10, 12), colour=(200, 30, 30)) -> "Image.Image":  # noqa: F821
    from PIL import Image

    h, w = size
    array = np.clip(np.array(colour)[None, None] + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Two classes (red and blue images), 6 PNGs each, 10 high and 12 wide."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label, colour in (("blue", (20, 30, 220)), ("red", (220, 30, 20))):
        (root / label).mkdir(parents=True)
        for i in range(6):
            _image(rng, colour=colour).save(root / label / f"{i}.png")
    return root


def _load(pm, data: dict):
    return load_data(resolve(pm, tree={"variant": "conv", "data": data}), torch.device("cpu"))


def test_an_image_folder_with_class_subfolders_is_labelled_channels_first(aepipe_pm, folder):
    data = _load(aepipe_pm, {"name": "imagefolder", "path": str(folder), "test_fraction": 0.25, "val_fraction": 0.25})
    assert data.image_shape == (3, 10, 12) and data.input_dim == 3 * 10 * 12 and data.n_classes == 2
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    y = torch.cat([data.y_train, data.y_val, data.y_test])
    assert x.shape[0] == 12 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    red = x[y == 1].reshape(-1, 3, 10, 12).mean(dim=(0, 2, 3))  # subfolders in name order: blue 0, red 1
    assert red[0] > 0.7 and red[2] < 0.2
    grey = _load(aepipe_pm, {"name": "imagefolder", "path": str(folder), "channels": 1, "image_size": [8, 6]})
    assert grey.image_shape == (1, 8, 6)


def test_a_flat_image_folder_has_no_labels_and_bad_folders_are_one_line(aepipe_pm, folder, tmp_path):
    flat = folder / "red"
    data = _load(aepipe_pm, {"name": "imagefolder", "path": str(flat)})
    assert data.n_classes == 0 and data.y_train is None and data.image_shape == (3, 10, 12)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no images \(.png, .jpg.*\) in .*empty"):
        _load(aepipe_pm, {"name": "imagefolder", "path": str(empty)})
    (flat / "9.png").write_text("not an image")
    with pytest.raises(DataError, match=r"red/9.png: not a readable image"):
        _load(aepipe_pm, {"name": "imagefolder", "path": str(flat)})
    (flat / "9.png").unlink()
    _image(np.random.default_rng(1), size=(7, 7)).save(flat / "9.png")
    with pytest.raises(DataError, match=r"red/9.png is 7x7, the first image 10x12; set data.image_size"):
        _load(aepipe_pm, {"name": "imagefolder", "path": str(flat)})
    assert _load(aepipe_pm, {"name": "imagefolder", "path": str(flat), "image_size": [10, 12]}).x_train.shape[1] == 360


def test_a_hugging_face_dataset_saved_to_disk_or_in_a_folder(aepipe_pm, folder, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(0)
    images = [_image(rng, size=(8, 8), colour=(220, 30, 20) if i % 3 else (20, 30, 220)) for i in range(12)]
    features = datasets.Features(
        {"picture": datasets.Image(), "kind": datasets.ClassLabel(names=["blue", "red", "green"])}
    )
    table = datasets.Dataset.from_dict(
        {"picture": images, "kind": [int(i % 3 != 0) for i in range(12)]}, features=features
    )
    datasets.DatasetDict({"train": table, "test": table.select(range(3))}).save_to_disk(str(tmp_path / "saved"))
    data = _load(aepipe_pm, {"name": "huggingface", "path": str(tmp_path / "saved"), "image_column": "picture",
                             "label_column": "kind", "val_fraction": 0.25, "test_fraction": 0.25})
    assert data.image_shape == (3, 8, 8) and data.n_classes == 3  # the ClassLabel's names, not the labels seen
    assert data.x_train.shape[0] + data.x_val.shape[0] + data.x_test.shape[0] == 12
    unlabelled = _load(aepipe_pm, {"name": "huggingface", "path": str(tmp_path / "saved"), "image_column": "picture",
                                   "label_column": "", "channels": 1})
    assert unlabelled.n_classes == 0 and unlabelled.image_shape == (1, 8, 8)
    with pytest.raises(DataError, match=r"no split 'validation' \(has: train, test\); set data.split"):
        _load(
            aepipe_pm,
            {"name": "huggingface", "path": str(tmp_path / "saved"), "split": "validation", "image_column": "picture"},
        )
    with pytest.raises(DataError, match=r"no column 'image' \(has: picture, kind\); set data.image_column"):
        _load(aepipe_pm, {"name": "huggingface", "path": str(tmp_path / "saved")})
    # a local folder of images, read by the library's own imagefolder builder (labels from subfolders)
    local = _load(aepipe_pm, {"name": "huggingface", "path": str(folder)})
    assert local.image_shape == (3, 10, 12) and local.n_classes == 2


@pytest.fixture(scope="module")
def colour32(tmp_path_factory) -> dict:
    """200 structured 32x32 colour images (a coloured disc on a gradient) as a [data] table."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    images = []
    for _ in range(200):
        cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(4, 9)
        colour = rng.integers(0, 256, 3)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        image = np.stack([xx * 8, yy * 8, np.full((32, 32), 128)]).astype(np.float64)
        image[:, disc] = colour[:, None]
        images.append(image)
    path = tmp_path_factory.mktemp("colour32") / "discs.npz"
    np.savez(path, x=np.clip(np.array(images), 0, 255).astype(np.uint8))
    return {"name": "file", "path": str(path), "image_shape": [3, 32, 32], "value_range": [0, 255]}


@pytest.mark.parametrize(
    "kind,name", [("encoder", "resnet"), ("decoder", "resnet"), ("variant", "resnet"), ("variant", "resnet-vae")]
)
def test_resnet_passes_the_conformance_suite_on_32x32_colour_images(aepipe_pm, colour32, kind, name):
    check_component(kind, name, aepipe_pm, data=colour32)


def _one_batch(pm, tree: dict) -> float:
    from aepipe.model import build_model

    pipeline = resolve(pm, tree=tree)
    data = load_data(pipeline, torch.device("cpu"))
    model = build_model(pipeline, data)
    loss, _, _ = model.step(data.x_train[:16], None if data.y_train is None else data.y_train[:16])
    loss.backward()
    return float(loss.detach())


def test_resnet_composes_with_every_family_that_takes_an_encoder_and_decoder(aepipe_pm, folder):
    """AE, DAE, VAE, CVAE and AAE on the residual network: the family's own sections added to
    the resnet variant (small widths: 10x12 images)."""
    data = {"name": "imagefolder", "path": str(folder)}
    small = {"encoder": {"widths": [8, 16]}, "decoder": {"widths": [8, 16]}, "code_dim": 4}
    families = {
        "ae": {},
        "dae": {"corruption": {"name": "gaussian", "sigma": 0.2}},
        "vae": {"encoder": {"distribution": "gaussian"}, "prior": {"name": "standard-normal"},
                "regularizers": {"kl": {}}},
        "vae-bottleneck": {"bottleneck": {"name": "gaussian"}, "prior": {"name": "standard-normal"},
                           "regularizers": {"kl": {}}},
        "cvae": {"encoder": {"distribution": "gaussian"}, "prior": {"name": "standard-normal"},
                 "regularizers": {"kl": {}}, "conditional": True},
        "aae": {"prior": {"name": "standard-normal"}, "regularizers": {"adversarial": {"hidden": [16]}}},
    }
    for family, model in families.items():
        merged = {**small, **model, "encoder": {**small["encoder"], **model.get("encoder", {})}}
        loss = _one_batch(aepipe_pm, {"variant": "resnet", "data": data, "model": merged})
        assert np.isfinite(loss), family


def test_aepipe_train_on_an_image_folder_logs_colour_figures(folder, tmp_path, monkeypatch):
    """The shipped denoising resnet pipeline, pointed at a generated folder: it trains, and its
    reconstruction figure is in colour."""
    from click.testing import CliRunner

    from aepipe import tracking
    from aepipe.cli import cli
    from conftest import PIPELINES

    monkeypatch.setenv("AEPIPE_HOME", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.store.forget()
    argv = ["train", str(PIPELINES / "resnet-dae-images.toml"), "-q", "--set", f"data.path='{folder}'", "--set",
            "train.epochs=1", "--set", "model.encoder.widths=[8, 16]", "--set", "model.decoder.widths=[8, 16]", "--set",
            "tracking.log_model=false"]
    out = CliRunner().invoke(cli, argv)
    assert out.exit_code == 0, out.output
    run_id = out.stdout.strip().splitlines()[-1]
    path = tracking.default_tracker().client.download_artifacts(run_id, "images/reconstructions.png", str(tmp_path))
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    assert (np.abs(pixels[:, 0] - pixels[:, 2]) > 60).mean() > 0.01  # red and blue images: not grey
