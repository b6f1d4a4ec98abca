"""The served model fails safely: MLflow's own scoring app (what `mlflow models serve` runs), in
this process, answers bad requests with HTTP 400 and one line of JSON, a failing model with 500
and one line, never a traceback or a server path, and only ever valid JSON."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from aepipe.cli import cli
from aepipe.errors import ConfigError

from conftest import PIPELINES, ROOT
from helpers import free_port

LIMIT = 20  # AEPIPE_SERVE_MAX_ROWS for this module's server


def _strict_json(body: str):
    """``body`` parsed as JSON proper: NaN and Infinity tokens, which Python's json accepts, fail."""
    def refuse(token):
        raise AssertionError(f"not valid JSON: the bare token {token} in {body[:200]}")

    return json.loads(body, parse_constant=refuse)


@pytest.fixture(scope="module")
def served(shared_store):
    import mlflow.pyfunc
    import uvicorn
    from mlflow.pyfunc import scoring_server

    from aepipe import tracking

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AEPIPE_HOME", str(shared_store))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        tracking.store.forget()
        mp.setenv("AEPIPE_SERVE_MAX_ROWS", str(LIMIT))
        mp.delenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", raising=False)  # scoring_server.init sets it; undone after
        out = CliRunner().invoke(cli, ["train", str(PIPELINES / "vanilla.toml"), "-q", "--set", "train.epochs=1",
                                       "--set", "tracking.log_images=false", "--set", "tracking.log_dataset=false"])
        assert out.exit_code == 0, out.output
        run_id = out.stdout.strip().splitlines()[-1]
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/pyfunc")
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(scoring_server.init(model), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline and thread.is_alive(), "the scoring server did not start"
            time.sleep(0.05)
        from sklearn.datasets import load_digits

        try:
            yield SimpleNamespace(url=f"http://127.0.0.1:{port}/invocations", model=model, raw=load_digits().data[:5])
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def _post(url: str, body: str) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _assert_one_safe_line(body: str) -> dict:
    assert "\n" not in body, body
    error = _strict_json(body)
    message = error["message"]
    assert "\n" not in message and "stack_trace" not in error, error
    for leak in ("Traceback", 'File "', ".py", "site-packages", str(ROOT), "/tmp", "/home"):
        assert leak not in body, f"{leak!r} in {body}"
    return error


ROW = [1.0] * 64
BAD = {
    "NaN": ('{"inputs": [[NaN' + ", 1.0" * 63 + "]]}", "row 0, column 0 is nan"),
    "Infinity": ('{"inputs": [[1.0, Infinity' + ", 1.0" * 62 + "]]}", "row 0, column 1 is inf"),
    "overflowing literal": ('{"inputs": [[1.0, 1.0, -1e999' + ", 1.0" * 61 + "]]}", "row 0, column 2 is -inf"),
    "bad mode": (json.dumps({"inputs": [ROW], "params": {"mode": "decode"}}),
                 "params.mode: 'decode' is not one of encode, reconstruct, sample"),
    "oversized n": (json.dumps({"inputs": [ROW], "params": {"mode": "sample", "n": 400_000_000}}),
                    f"params.n: 400000000 is out of range; this server draws 1 .. {LIMIT} samples a request "
                    "(AEPIPE_SERVE_MAX_ROWS)"),
    "n of 0": (json.dumps({"inputs": [ROW], "params": {"mode": "sample", "n": 0}}), "params.n: 0 is out of range"),
    "too many rows": (json.dumps({"inputs": [ROW] * (LIMIT + 1)}),
                      f"inputs: {LIMIT + 1} rows; this server takes at most {LIMIT}"),
    "rows too short": (json.dumps({"inputs": [[1.0, 2.0, 3.0]]}), "inputs: rows of 3 values; this model expects 64"),
    "text": (json.dumps({"inputs": [["a"] * 64]}), "inputs: holds text, not numbers"),
    "named inputs": (json.dumps({"inputs": {"x": ROW}}), "inputs: named inputs (x); give one array of rows"),
    "a mode of a megabyte": (json.dumps({"inputs": [ROW], "params": {"mode": "x" * 1_000_000}}),
                             "params.mode: 'xxxxxxxx"),
    "what it does not offer": (json.dumps({"inputs": [ROW], "params": {"what": "indices"}}),
                               "params.what: 'indices' is not one of code"),
    "negative seed": (json.dumps({"inputs": [ROW], "params": {"mode": "sample", "n": 2, "seed": -1}}),
                      "params.seed: -1 is out of range"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_request_gets_400_and_one_line_of_json(served, case):
    body, expected = BAD[case]
    status, answer = _post(served.url, body)
    assert status == 400, answer
    error = _assert_one_safe_line(answer)
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert expected in error["message"], error["message"]
    assert len(answer) < 1000  # the request is not echoed back


def test_answers_are_valid_json_up_to_the_row_bound(served):
    status, body = _post(served.url, json.dumps({"inputs": served.raw.tolist()}))
    assert status == 200, body
    codes = np.asarray(_strict_json(body)["predictions"])
    assert codes.shape[0] == 5 and np.isfinite(codes).all()
    status, body = _post(served.url, json.dumps({"inputs": [ROW], "params": {"mode": "sample", "n": LIMIT}}))
    assert status == 200, body
    assert np.asarray(_strict_json(body)["predictions"]).shape == (LIMIT, 64)
    status, body = _post(served.url, json.dumps({"inputs": [ROW] * LIMIT, "params": {"mode": "reconstruct"}}))
    assert status == 200 and np.asarray(_strict_json(body)["predictions"]).shape == (LIMIT, 64)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_an_output_that_is_not_finite_is_refused_not_sent_as_bare_nan(served):
    # finite float64 inputs that overflow float32 once "scaled" is trusted: the code is not finite
    status, body = _post(served.url, json.dumps({"inputs": [[1e300] * 64], "params": {"scaled": True}}))
    assert status == 400, body
    assert "output holds NaN or infinite values" in _assert_one_safe_line(body)["message"]


@pytest.mark.parametrize("failure, status",
                         [(RuntimeError("CUDA error in /srv/secret/aepipe_plugins/x.py line 3"), 500),
                                             (ConfigError("this model is conditional: it needs labels"), 400)])
def test_a_failing_model_answers_in_one_line_and_the_server_log_keeps_the_traceback(
    served, monkeypatch, caplog, failure, status
):
    inner = served.model._model_impl.python_model.model

    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(inner, "encode", broken)
    with caplog.at_level(logging.ERROR, logger="aepipe.serving"):
        code, body = _post(served.url, json.dumps({"inputs": [ROW]}))
    assert code == status, body
    error = _assert_one_safe_line(body)
    if status == 500:
        assert error["message"] == "the model failed on this request; the server's log tells why"
        assert "/srv/secret" not in body
        assert any(r.exc_info and "/srv/secret" in str(r.exc_info[1]) for r in caplog.records)  # told on the server
    else:
        assert error["message"] == "this model is conditional: it needs labels"


def test_the_row_bound_is_a_setting_with_a_default(monkeypatch):
    from aepipe.serving import DEFAULT_MAX_ROWS, max_rows

    monkeypatch.delenv("AEPIPE_SERVE_MAX_ROWS", raising=False)
    assert max_rows() == DEFAULT_MAX_ROWS == 1000
    monkeypatch.setenv("AEPIPE_SERVE_MAX_ROWS", "50")
    assert max_rows() == 50
    for bad in ("0", "lots", "-3"):
        monkeypatch.setenv("AEPIPE_SERVE_MAX_ROWS", bad)
        with pytest.raises(ConfigError, match=f"AEPIPE_SERVE_MAX_ROWS='{bad}': expected a whole number of rows >= 1"):
            max_rows()
