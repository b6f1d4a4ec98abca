"""Each run's model as an MLflow pyfunc: loaded by a plain MLflow client and served by
`mlflow models serve`, its codes match `aepipe encode`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

from aepipe.cli import cli

from conftest import PIPELINES
from helpers import free_port, wait_for_http



@pytest.fixture
def trained(store, tmp_path):
    out = CliRunner().invoke(cli, ["train", str(PIPELINES / "vanilla.toml"), "-q", "--set", "train.epochs=3",
                                   "--set", "tracking.log_images=false", "--set", "tracking.log_dataset=false"])
    assert out.exit_code == 0, out.output
    run_id = out.stdout.strip().splitlines()[-1]
    from sklearn.datasets import load_digits

    raw = load_digits().data[:7]
    np.save(tmp_path / "in.npy", raw)
    enc = CliRunner().invoke(cli, ["encode", run_id, str(tmp_path / "in.npy"), "-o", str(tmp_path / "codes.npy")])
    assert enc.exit_code == 0, enc.output
    return run_id, raw, np.load(tmp_path / "codes.npy")


def test_pyfunc_modes_with_a_plain_mlflow_client(trained):
    import mlflow.pyfunc

    run_id, raw, codes = trained
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/pyfunc")
    assert np.allclose(model.predict(raw), codes, atol=1e-5)
    rec = model.predict(raw, params={"mode": "reconstruct"})
    assert rec.shape == raw.shape and rec.min() >= 0 and rec.max() <= 16
    scaled = model.predict(raw / 16.0, params={"mode": "encode", "scaled": True})
    assert np.allclose(scaled, codes, atol=1e-5)
    assert model.metadata.get_params_schema() is not None
    # the input checks of `aepipe encode`, as one-line errors a client can show
    from mlflow.exceptions import MlflowException

    bad = raw.copy()
    bad[2, 5] = np.nan
    with pytest.raises(
        MlflowException, match=r"^inputs: row 2, column 5 is nan \(NaN and infinite values are not accepted\)$"
    ):
        model.predict(bad)
    with pytest.raises(MlflowException, match=r"^inputs: rows of 63 values; this model expects 64$"):
        model.predict(raw[:, :63])


def test_mlflow_models_serve_returns_the_codes_of_aepipe_encode(trained, store):
    from aepipe import tracking

    run_id, raw, codes = trained
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.default_tracking_uri()}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run_id}/pyfunc",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", proc)

        def ask(payload):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return np.asarray(json.loads(r.read())["predictions"])

        served = ask({"inputs": raw.tolist()})
        assert np.allclose(served, codes, atol=1e-5)
        rec = ask({"inputs": raw.tolist(), "params": {"mode": "reconstruct"}})
        assert rec.shape == raw.shape
        # a NaN is refused as `aepipe encode` refuses it: 400 and one line of JSON, no traceback
        with pytest.raises(urllib.error.HTTPError) as refused:
            ask({"inputs": [[float("nan")] * 64], "params": {"mode": "reconstruct"}})
        body = refused.value.read().decode()
        assert refused.value.code == 400 and "\n" not in body and "Traceback" not in body, body
        assert (
            json.loads(body)["message"] == "inputs: row 0, column 0 is nan (NaN and infinite values are not accepted)"
        )
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
