"""Hostile or malformed input at the edge (issue 12, item 2): every case is one line naming the
file or option, exit 2, no traceback, and nothing recorded. One conditional run (a cvae, with a
prior and labels) serves every array case."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aepipe.cli import cli

from conftest import PIPELINES
from helpers import one_line_error as _one_line_error


@pytest.fixture(scope="module")
def cvae_run(shared_store) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AEPIPE_HOME", str(shared_store))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        out = CliRunner().invoke(cli, ["train", str(PIPELINES / "cvae.toml"), "-q", "--set", "train.epochs=1",
                                       "--set", "tracking.log_images=false", "--set", "tracking.log_dataset=false"])
    assert out.exit_code == 0, out.output
    return out.stdout.strip().splitlines()[-1]


def _files(folder: Path) -> dict[str, Path]:
    """Every bad input file, and good ones to pair them with."""
    rng = np.random.default_rng(0)
    made = {}

    def save(name: str, array: np.ndarray, **kw) -> None:
        made[name] = folder / f"{name}.npy"
        np.save(made[name], array, **kw)

    save("ok", rng.random((3, 64)) * 16)
    save("labels", np.array([1, 2, 3]))
    save("text", np.array([["7"] * 64] * 2))
    save("no_rows", np.zeros((0, 64)))
    nan = rng.random((3, 64))
    nan[2, 17] = np.nan
    save("nan", nan)
    inf = rng.random((3, 64))
    inf[0, 3] = np.inf
    save("inf", inf)
    save("objects", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    made["csv_named_npy"] = folder / "csv_named_npy.npy"
    made["csv_named_npy"].write_text("1,2,3\n4,5,6\n")
    made["pickle"] = folder / "pickle.npy"
    made["pickle"].write_bytes(pickle.dumps([1, 2, 3]))
    made["npz"] = folder / "npz.npy"
    with open(made["npz"], "wb") as fh:
        np.savez(fh, x=np.zeros(3))
    save("label_text", np.array(["1", "2", "3"]))
    save("label_fraction", np.array([1.0, 2.5, 3.0]))
    save("label_too_big", np.array([1, 2, 10]))
    save("label_negative", np.array([1, -2, 3]))
    save("label_count", np.array([1, 2]))
    return made


ARRAY_CASES = [
    # (input, labels, the message's parts)
    ("text", "labels", ["text.npy: holds text, not numbers"]),
    ("no_rows", "labels", ["no_rows.npy: holds no rows (shape (0, 64))"]),
    ("nan", "labels", ["nan.npy: row 2, column 17 is nan"]),
    ("inf", "labels", ["inf.npy: row 0, column 3 is inf"]),
    ("objects", "labels", ["objects.npy: holds Python objects (dtype object), which aepipe does not unpickle"]),
    ("csv_named_npy", "labels", ["csv_named_npy.npy: not a .npy file (it starts with b'1,2,3\\n'"]),
    ("pickle", "labels", ["pickle.npy: not a .npy file"]),
    ("npz", "labels", ["npz.npy: is a .npz archive; give one array as a .npy file"]),
    ("ok", "label_text", ["--labels", "label_text.npy: labels hold text, not whole numbers"]),
    ("ok", "label_fraction", ["--labels", "label_fraction.npy: label 1 is 2.5; labels are whole numbers"]),
    ("ok", "label_too_big", ["--labels", "label_too_big.npy: label 2 is 10; this model has classes 0..9"]),
    ("ok", "label_negative", ["--labels", "label_negative.npy: label 1 is -2"]),
    ("ok", "label_count", ["--labels", "label_count.npy: 2 labels for 3 rows"]),
    ("ok", "pickle", ["--labels", "pickle.npy: not a .npy file"]),
]


@pytest.mark.parametrize("command", ["encode", "reconstruct"])
def test_bad_arrays_are_one_line_errors_before_the_model_runs(cvae_run, store, tmp_path, command):
    files = _files(tmp_path)
    for inp, labels, parts in ARRAY_CASES:
        out = tmp_path / "out.npy"
        result = CliRunner().invoke(
            cli, [command, cvae_run, str(files[inp]), "--labels", str(files[labels]), "-o", str(out)]
        )
        _one_line_error(result, *parts)
        assert not out.exists()
    # the output's folder is checked before anything is read
    result = CliRunner().invoke(cli, [command, cvae_run, str(files["ok"]), "--labels", str(files["labels"]),
                                      "-o", str(tmp_path / "nowhere" / "out.npy")])
    _one_line_error(result, f"-o {tmp_path / 'nowhere' / 'out.npy'}: the folder {tmp_path / 'nowhere'} does not exist")
    result = CliRunner().invoke(
        cli, [command, cvae_run, str(files["ok"]), "--labels", str(files["labels"]), "-o", str(tmp_path)]
    )
    _one_line_error(result, "'-o' / '--output'", "is a directory")
    good = CliRunner().invoke(
        cli, [command, cvae_run, str(files["ok"]), "--labels", str(files["labels"]), "-o", str(tmp_path / "good.npy")]
    )
    assert good.exit_code == 0, good.output
    assert np.isfinite(np.load(tmp_path / "good.npy")).all()


def test_sample_checks_its_paths_and_count_before_drawing(cvae_run, store, tmp_path):
    run = CliRunner()
    _one_line_error(run.invoke(cli, ["sample", cvae_run, "-o", str(tmp_path / "no" / "s.npy")]), "-o", "does not exist")
    _one_line_error(
        run.invoke(cli, ["sample", cvae_run, "-o", str(tmp_path / "s.npy"), "--grid", str(tmp_path / "no" / "g.png")]),
        "--grid",
        "does not exist",
    )
    _one_line_error(run.invoke(cli, ["sample", cvae_run, "-n", str(10**12), "-o", str(tmp_path / "s.npy")]),
                    f"-n {10**12}: 1,000,000,000,000 samples needs about", "is free on cpu")
    _one_line_error(run.invoke(cli, ["sample", cvae_run, "-n", str(10**30), "-o", str(tmp_path / "s.npy")]), "-n")
    _one_line_error(run.invoke(cli, ["sample", cvae_run, "-n", "0", "-o", str(tmp_path / "s.npy")]),
                    "Invalid value for '-n': 0 is not in the range x>=1", "sample -h')")
    _one_line_error(run.invoke(cli, ["sample", cvae_run, "--seed", "-1", "-o", str(tmp_path / "s.npy")]), "--seed")
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("argv,parts", [
    (["ui", "--port", "70000"], ["Invalid value for '--port': 70000 is not in the range 1<=x<=65535", "ui -h')"]),
    (["ui", "--port", "0"], ["'--port': 0 is not in the range"]),
    (["tune", "{vanilla}", "--n-workers", "0"], ["'--n-workers': 0 is not in the range 1<=x<=256"]),
    (["tune", "{vanilla}", "--n-workers", "100000"], ["'--n-workers': 100000 is not in the range"]),
    (["tune", "{vanilla}", "--n-trials", "0"], ["'--n-trials': 0 is not in the range x>=1"]),
    (["tune", "{vanilla}", "--timeout", "-5"], ["'--timeout': -5.0 is not in the range x>0"]),
    (["zoo", "--epochs", "0"], ["'--epochs': 0 is not in the range x>=1"]),
    (["trian"], ["No such command 'trian'. Did you mean 'train'?"]),
])
def test_cli_counts_and_ports_are_checked_in_one_line(argv, parts, tmp_path, monkeypatch):
    monkeypatch.setenv("AEPIPE_HOME", str(tmp_path / "mlruns"))
    result = CliRunner().invoke(cli, [a.format(vanilla=PIPELINES / "vanilla.toml") for a in argv])
    _one_line_error(result, *parts)
    assert not (tmp_path / "mlruns").exists()  # nothing recorded, no store created


def _idx(path: Path, array: np.ndarray, truncate: int = 0) -> None:
    data = (
        struct.pack(">BBBB", 0, 0, 8, array.ndim)
        + struct.pack(f">{array.ndim}i", *array.shape)
        + array.astype(np.uint8).tobytes()
    )
    path.write_bytes(data[: len(data) - truncate] if truncate else data)


def _dataset_cases(folder: Path) -> list[tuple[list[str], list[str]]]:
    """(--set overrides, message parts) for each broken dataset file."""
    cases = []
    csv = folder / "words.csv"
    csv.write_text("1,2,3\n4,five,6\n")
    cases.append(
        ([f"data.path='{csv}'"], [f"{csv}: cannot read: could not convert text 'five' to float64 at row 1, column 2"])
    )
    npz = folder / "other.npz"
    np.savez(npz, images=np.zeros((4, 3)))
    cases.append(([f"data.path='{npz}'"], [f"{npz}: no array 'x' (has: images); set data.x_key"]))
    labelled = folder / "labelled.npz"
    np.savez(labelled, x=np.zeros((4, 3)), y=np.array([0, 1, 2]))
    cases.append(([f"data.path='{labelled}'"], [f"{labelled}: 3 labels for 4 rows"]))
    nan_csv = folder / "nan.csv"
    nan_csv.write_text("1,2,3\n4,nan,6\n")
    cases.append(([f"data.path='{nan_csv}'"], [f"{nan_csv}: row 1, column 1 is nan"]))
    column = folder / "col.csv"
    column.write_text("1,2,3\n4,5,6\n")
    cases.append(
        ([f"data.path='{column}'", "data.label_column=7"], ["data.label_column = 7, but the rows have 3 columns"])
    )
    text_npy = folder / "text.npy"
    text_npy.write_text("not numpy\n")
    cases.append(([f"data.path='{text_npy}'"], [f"{text_npy}: not a .npy file"]))
    broken_zip = folder / "broken.npz"
    broken_zip.write_bytes(b"PK\x03\x04 not really a zip")
    cases.append(([f"data.path='{broken_zip}'"], [f"{broken_zip}: cannot read:"]))
    return cases


def _idx_cases(folder: Path) -> list[tuple[list[str], list[str]]]:
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (20, 4, 4)), rng.integers(0, 10, 20)
    cases = []
    for name, damage in (("truncated", "images"), ("counts", "labels"), ("magic", "magic"), ("gzip", "gzip"), ("header",
        "header")):
        d = folder / name
        d.mkdir()
        _idx(d / "train-images-idx3-ubyte", images, truncate=5 if damage == "images" else 0)
        _idx(d / "train-labels-idx1-ubyte", labels[:-1] if damage == "labels" else labels)
        _idx(d / "t10k-images-idx3-ubyte", images[:5])
        _idx(d / "t10k-labels-idx1-ubyte", labels[:5])
        if damage == "magic":
            (d / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
        if damage == "gzip":
            (d / "t10k-images-idx3-ubyte").unlink()
            blob = gzip.compress((d / "train-images-idx3-ubyte").read_bytes())
            (d / "t10k-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
        if damage == "header":
            (d / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
        cases.append(([f"data.path='{d}'"], {
            "truncated": [f"{d / 'train-images-idx3-ubyte'}: header says (20, 4, 4) (320 values) but the file holds "
                          "315"],
            "counts": [f"dataset 'mnist' in {d}: 20 images but 19 labels"],
            "magic": [f"{d / 't10k-images-idx3-ubyte'}: not an unsigned-byte IDX file (magic 00000d03)"],
            "gzip": [f"{d / 't10k-images-idx3-ubyte.gz'}: cannot read:"],
            "header": [f"{d / 't10k-labels-idx1-ubyte'}: a truncated IDX header (3 dimensions, 2 bytes of sizes)"],
        }[name]))
    return cases


def test_broken_dataset_files_are_one_line_errors_and_record_nothing(tmp_path, monkeypatch):
    home = tmp_path / "mlruns"
    monkeypatch.setenv("AEPIPE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    cases = [(["data.name=file", *sets], parts) for sets, parts in _dataset_cases(tmp_path)]
    cases += [(["data.name=mnist", *sets], parts) for sets, parts in _idx_cases(tmp_path)]
    for sets, parts in cases:
        argv = ["train", str(PIPELINES / "vanilla.toml"), "-q"]
        for s in sets:
            argv += ["--set", s]
        _one_line_error(runner.invoke(cli, argv), *parts)
    assert not (home / "mlflow.db").exists() or _no_runs(home)


def _no_runs(home: Path) -> bool:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_model_too_large_for_memory_is_refused_before_it_is_built(tmp_path, monkeypatch):
    """A code size or layer width that would need more memory than the device has: refused,
    measured on torch's meta device (nothing allocated), naming the part with most parameters."""
    home = tmp_path / "mlruns"
    monkeypatch.setenv("AEPIPE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    for sets, parts in ((["model.code_dim=100000000000000"],
                         ["the model (12,900,000,000,000,064 parameters, most in model.encoder) needs about",
                          "lower the sizes of [model.encoder] or model.code_dim"]),
                        (["variant='vae'", "model.encoder.hidden=[100000000, 100000]"],
                         ["most in model.encoder", "is free on cpu"])):
        argv = ["train", str(PIPELINES / "vanilla.toml"), "-q"]
        for s in sets:
            argv += ["--set", s]
        _one_line_error(runner.invoke(cli, argv), *parts)
    assert not (home / "mlflow.db").exists() or _no_runs(home)
