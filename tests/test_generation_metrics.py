"""Generation metrics (issue 20): the Fréchet distance against a direct scipy computation, KID
against torchmetrics' polynomial MMD, FID's behaviour on real data (a set against itself, added
noise, halves of the test split against blurred and shuffled-pixel copies) in the ``domain``
feature space, precision/recall of identical sets, and the ``aepipe fid`` command."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import scipy.linalg
import torch
from click.testing import CliRunner

from aepipe import cli as cli_module
from aepipe.errors import ConfigError
from aepipe.usecases.fid import compare_image_sets
from aepipe.evaluation.generation import (METRICS, feature_space, frechet_distance, gaussian_stats,
                                          generation_metrics, kernel_inception_distance)
from aepipe.evaluation.image_sets import load_dataset

from conftest import store_at, use_store


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A store whose ``features/`` folder holds the digits classifier, trained once here."""
    root = tmp_path_factory.mktemp("generation") / "mlruns"
    with store_at(root):
        feature_space("domain", load_dataset({"name": "digits"}, "cpu"), "cpu")
    return root


@pytest.fixture(scope="module")
def digits(home):
    with store_at(home):
        data = load_dataset({"name": "digits"}, "cpu")
        space = feature_space("domain", data, "cpu")
    assert not space.trained  # the fixture above trained it
    return data, space


def _direct_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID written out from its definition with scipy, independently of aepipe's code."""
    m1, m2 = a.mean(0), b.mean(0)
    c1 = np.cov(a.T)
    c2 = np.cov(b.T)
    root = scipy.linalg.sqrtm(c1.dot(c2)).real
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * root))


def test_frechet_distance_equals_a_direct_scipy_computation():
    rng = np.random.default_rng(0)
    for width, shift in ((8, 0.3), (64, 1.0), (200, 0.05)):
        a = rng.normal(size=(500, width)) @ rng.normal(size=(width, width)) / width
        b = rng.normal(size=(400, width)) * 1.3 + shift
        ours = frechet_distance(*gaussian_stats(torch.from_numpy(a)), *gaussian_stats(torch.from_numpy(b)))
        assert ours == pytest.approx(_direct_fid(a, b), rel=1e-6)
        assert frechet_distance(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T)) == pytest.approx(
            _direct_fid(a, b), rel=1e-6
        )
    # fewer rows than features: singular covariances (where sqrtm warns) are handled exactly
    few = rng.normal(size=(20, 50))
    assert frechet_distance(*gaussian_stats(few), *gaussian_stats(few + 0.5)) == pytest.approx(50 * 0.25, rel=1e-6)
    assert frechet_distance(*gaussian_stats(few), *gaussian_stats(few)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_kid_is_the_unbiased_polynomial_mmd_of_torchmetrics():
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16)) + 0.2
    # one subset holding every row: the estimate over the whole sets, which torchmetrics computes directly
    ours = kernel_inception_distance(a, b, subsets=1, subset_size=300)
    theirs = float(poly_mmd(torch.from_numpy(a), torch.from_numpy(b)))
    assert ours == pytest.approx(theirs, rel=1e-9)
    # unbiased: near 0 for two samples of one distribution, far from it for shifted ones
    same = kernel_inception_distance(
        rng.normal(size=(600, 16)), rng.normal(size=(600, 16)), subsets=20, subset_size=300
    )
    assert abs(same) < 0.2 * kernel_inception_distance(a, b, subsets=20, subset_size=300)


def test_identical_sets_have_precision_and_recall_one_and_no_distance():
    rng = np.random.default_rng(2)
    f = torch.from_numpy(rng.normal(size=(200, 10))).float()
    out = generation_metrics(f, f.clone())
    assert set(out) == set(METRICS)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    assert out["fid"] == pytest.approx(0.0, abs=1e-6)
    far = generation_metrics(f, f + 10.0)
    assert far["precision"] == 0.0 and far["recall"] == 0.0 and far["fid"] == pytest.approx(100.0 * 10, rel=1e-3)


def test_generation_metrics_refuse_bad_features():
    f = torch.zeros(10, 4)
    with pytest.raises(ConfigError, match=r"\(N, F\) and \(M, F\)"):
        generation_metrics(f, torch.zeros(10, 5))
    with pytest.raises(ConfigError, match="more than 5 rows"):
        generation_metrics(f[:5], f)
    bad = torch.randn(10, 4)
    bad[3, 1] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        generation_metrics(torch.randn(10, 4), bad)


def test_fid_of_a_set_against_itself_is_zero_and_grows_monotonically_with_noise(digits):
    data, space = digits
    x = data.x_test
    real = space.features(x)
    assert generation_metrics(real, space.features(x.clone()))["fid"] == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    fids = [generation_metrics(real, space.features((x + s * noise).clamp(0, 1)))["fid"] for s in (0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert fids[0] > 1e-3


def test_halves_of_the_test_split_are_far_closer_than_blurred_or_shuffled_copies(digits):
    data, space = digits
    x = data.x_test
    n = len(x) // 2
    first = space.features(x[:n])
    halves = generation_metrics(first, space.features(x[n:]))["fid"]
    images = x.reshape(-1, 1, 8, 8)
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate"), 3, 1)
    shuffled = x[:, torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(0))]
    blur = generation_metrics(first, space.features(blurred.reshape(len(x), -1)[n:]))
    shuffle = generation_metrics(first, space.features(shuffled[n:]))
    assert blur["fid"] > 5 * halves and shuffle["fid"] > 5 * halves, (halves, blur["fid"], shuffle["fid"])
    assert shuffle["recall"] < 0.5 and blur["kid"] > 0 and shuffle["kid"] > 0


# --- aepipe fid ------------------------------------------------------------------------------


def _fid(*args):
    return CliRunner().invoke(cli_module.cli, ["fid", *args])


@pytest.fixture
def arrays(digits, home, tmp_path, monkeypatch):
    """The digits test split as two .npy image arrays (halves; 8-bit values), in the fixture's store."""
    use_store(monkeypatch, home)
    data, _ = digits
    x = (data.x_test.numpy().reshape(-1, 1, 8, 8) * 255).round() / 255
    n = len(x) // 2
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, x[:n].astype(np.float32))
    np.save(b, x[n:, 0].astype(np.float32))  # (N, H, W) is accepted too
    return a, b, x


def test_fid_command_on_arrays_prints_every_metric_and_json(arrays):
    a, b, _ = arrays
    out = _fid(str(a), str(b), "--features", "domain", "--dataset", "digits")
    assert out.exit_code == 0, out.output
    for name in METRICS:
        assert name in out.stdout
    assert "classifier of dataset 'digits'" in out.stdout
    out = _fid(str(a), str(b), "--features", "domain", "--dataset", "digits", "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert set(METRICS) <= set(result) and result["features"] == "domain" and result["n_a"] == len(np.load(a))
    # the command's figures are the library's
    again = compare_image_sets(a, b, features="domain", dataset={"name": "digits"}, device="cpu")
    assert result["fid"] == pytest.approx(again["fid"], rel=1e-9) and 0 < result["fid"] < 50


def test_fid_command_on_a_folder_of_pngs_equals_the_same_images_as_an_array(arrays, tmp_path):
    import PIL.Image

    a, _, x = arrays
    folder = tmp_path / "pngs" / "nested"
    folder.mkdir(parents=True)
    first = np.load(a)
    for i, image in enumerate(first):
        PIL.Image.fromarray((image[0] * 255).round().astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
    out = _fid(str(a), str(tmp_path / "pngs"), "--features", "domain", "--dataset", "digits", "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["n_b"] == len(first) and result["fid"] == pytest.approx(0.0, abs=1e-6) and result["precision"] == 1.0


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist"),
    ("flat", r"shape \(20,\); expected images"),
    ("range", r"values in \[0, 2\]; expected images with values in \[0, 1\]"),
    ("bytes", "divide 8-bit values by 255"),
    ("shapes", r"B of shape \(1, 4, 4\); compare images of one shape"),
    ("nan", "NaN and infinite values are not accepted"),
    ("empty-folder", "holds no image files"),
    ("sizes", "must share one size"),
    ("no-dataset", "--features domain learns from a dataset"),
    ("wrong-dataset-shape", r"the images are \(1, 4, 4\); dataset 'digits' holds \(1, 8, 8\)"),
    ("unknown-space", "unknown feature 'nope'; available: domain, inception"),
    ("both", "--dataset and --pipeline both name a dataset"),
])
def test_fid_command_refuses_bad_input_in_one_line(arrays, tmp_path, case, message):
    import PIL.Image

    a, b, _ = arrays
    other = tmp_path / "other.npy"
    extra: list[str] = ["--features", "domain", "--dataset", "digits"]
    if case == "missing":
        other = tmp_path / "nothing.npy"
    elif case == "flat":
        np.save(other, np.zeros(20, np.float32))
    elif case == "range":
        np.save(other, np.linspace(0, 2, 640, dtype=np.float32).reshape(10, 8, 8))
    elif case == "bytes":
        np.save(other, np.full((10, 8, 8), 200, np.uint8))
    elif case in ("shapes", "wrong-dataset-shape"):
        np.save(other, np.zeros((10, 4, 4), np.float32))
        if case == "wrong-dataset-shape":
            a = tmp_path / "small.npy"
            np.save(a, np.ones((10, 4, 4), np.float32) / 2)
    elif case == "nan":
        bad = np.zeros((10, 8, 8), np.float32)
        bad[2, 3, 4] = np.nan
        np.save(other, bad)
    elif case == "empty-folder":
        other = tmp_path / "empty"
        other.mkdir()
    elif case == "sizes":
        other = tmp_path / "mixed"
        other.mkdir()
        PIL.Image.new("L", (8, 8)).save(other / "a.png")
        PIL.Image.new("L", (9, 8)).save(other / "b.png")
    elif case == "no-dataset":
        other, extra = b, ["--features", "domain"]
    elif case == "unknown-space":
        other, extra = b, ["--features", "nope"]
    elif case == "both":
        other, extra = b, ["--features", "domain", "--dataset", "digits", "--pipeline", str(tmp_path / "p.toml")]
    out = _fid(str(a), str(other), *extra)
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines



def test_fid_command_takes_the_dataset_of_a_pipeline_file(arrays, tmp_path):
    a, b, _ = arrays
    pipeline = tmp_path / "p.toml"
    pipeline.write_text('variant = "vae"\n[data]\nname = "digits"\nsplit_seed = 0\n')
    out = _fid(str(a), str(b), "--features", "domain", "--pipeline", str(pipeline), "--json")
    assert out.exit_code == 0, out.output
    by_name = json.loads(_fid(str(a), str(b), "--features", "domain", "--dataset", "digits", "--json").stdout)
    # the same split: the same classifier
    assert json.loads(out.stdout)["fid"] == pytest.approx(by_name["fid"], rel=1e-9)
    pipeline.write_text('[data]\nname = "digits"\nsplit_seed = "x"\n')
    out = _fid(str(a), str(b), "--features", "domain", "--pipeline", str(pipeline))
    assert out.exit_code == 2 and "data.split_seed" in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")
def test_fid_command_names_its_device_option_when_cuda_is_missing(arrays):
    a, b, _ = arrays
    out = _fid(str(a), str(b), "--features", "domain", "--dataset", "digits", "--device", "cuda")
    assert out.exit_code == 2 and "--device: 'cuda' asked for, but CUDA is not available here" in out.stderr
