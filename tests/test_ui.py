"""The MLflow UI over aepipe's store, loaded in a real (headless) Chromium: the run, its metrics
and an image artifact render. Skipped where Chromium is missing; .ci/run installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request

import pytest
from click.testing import CliRunner

from aepipe.cli import cli

from conftest import PIPELINES
from helpers import free_port, wait_for_http

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)"
)



def _chromium(url: str, profile, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}",
                           "--virtual-time-budget=20000", "--window-size=1400,1000", *extra, url],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_mlflow_ui_shows_runs_metrics_and_images(store, tmp_path):
    out = CliRunner().invoke(cli, ["train", str(PIPELINES / "vanilla.toml"), "-q", "--set", "train.epochs=3",
                                   "--set", "tracking.log_model=false", "--set", "tracking.run_name=ui-check-run"])
    assert out.exit_code == 0, out.output
    run_id = out.stdout.strip().splitlines()[-1]
    from mlflow import MlflowClient

    exp_id = MlflowClient().get_run(run_id).info.experiment_id
    port = free_port()
    env = {**os.environ, "AEPIPE_HOME": str(store)}
    env.pop("MLFLOW_TRACKING_URI", None)
    # the server's output goes to a file: a pipe nobody reads fills (64 KiB: MLflow logs every request,
    # and tracebacks of its own assistant endpoints) and then blocks the server mid-page, so
    # Chromium waits for it until its timeout (it did with a fresh HOME, which logs more)
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "aepipe.cli", "ui", "--port", str(port)], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health", server, log=log)
        # the run's page lists its name, params and metrics
        dom = _chromium(f"{base}/#/experiments/{exp_id}/runs/{run_id}", tmp_path / "p1", "--dump-dom").stdout
        for text in ("ui-check-run", "val_loss", "test_mse", "model.code_dim"):
            assert text in dom, f"{text!r} not rendered"
        # the experiment's runs table
        dom = _chromium(f"{base}/#/experiments/{exp_id}/runs", tmp_path / "p2", "--dump-dom").stdout
        assert "ui-check-run" in dom
        # an image artifact: its page shows an <img> served by the UI's artifact endpoint, which returns the PNG
        page = f"{base}/#/experiments/{exp_id}/runs/{run_id}/artifacts/images/reconstructions.png"
        dom = _chromium(page, tmp_path / "p3", "--dump-dom").stdout
        assert "<img" in dom and "reconstructions.png" in dom
        with urllib.request.urlopen(
            f"{base}/get-artifact?path=images%2Freconstructions.png&run_uuid={run_id}", timeout=10
        ) as r:
            assert r.read(8) == b"\x89PNG\r\n\x1a\n"
        shot = tmp_path / "mlflow-ui-run.png"
        _chromium(page, tmp_path / "p4", f"--screenshot={shot}")
        assert shot.stat().st_size > 20_000  # a real page, not a blank one
        keep = os.environ.get("AEPIPE_UI_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
    finally:
        import signal

        server.send_signal(signal.SIGTERM)  # aepipe stops the MLflow server and its workers (tests/test_ui_private.py)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
