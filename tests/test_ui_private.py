"""`aepipe ui` is private unless the user says otherwise: beyond loopback only with --expose,
which turns MLflow's login on and lets only the given addresses through; and it stops within a
few seconds of SIGTERM, leaving no process behind."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from aepipe.cli import cli

from helpers import free_port, one_line_error as _one_line_exit_2, wait_for_http


@pytest.fixture
def no_server(monkeypatch):
    """A refused command must not start a server: if one would, the test fails instead."""
    from aepipe import ui

    def started(*args, **kwargs):
        raise AssertionError("a server was started")

    monkeypatch.setattr(ui, "run", started)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "fileserver.lan"])
def test_a_host_beyond_loopback_is_refused_without_expose(store, no_server, host):
    line = _one_line_exit_2(CliRunner().invoke(cli, ["ui", "--host", host]), f"--host {host}: not a loopback address",
                            "read and write access to the tracking store with no login", "Add --expose")
    assert "MLflow UI on" not in line


@pytest.mark.parametrize("argv, parts", [
    (["--host", "0.0.0.0", "--expose"], ["--host 0.0.0.0 --expose: name the address(es) clients will use",
                                         "--allowed-host"]),
    (["--allowed-host", "10.0.0.7"], ["--allowed-host: only with --expose"]),
    (["--host", "0.0.0.0", "--expose", "--allowed-host", "*"],
     ["--allowed-host '*': expected a host name or IP address"]),
    (["--host", "0.0.0.0", "--expose", "--allowed-host", "10.0.0.7,evil.com"], ["--allowed-host '10.0.0.7,evil.com'"]),
    (["--host", "0.0.0.0", "--expose", "--allowed-host", "http://10.0.0.7"], ["--allowed-host 'http://10.0.0.7'"]),
    (["--host", "0.0.0.0", "--expose", "--allowed-host", "10.0.0.7"],
     ["--expose: the first start creates the UI's admin user 'admin'", "MLFLOW_AUTH_ADMIN_PASSWORD"]),
])
def test_expose_needs_the_addresses_and_an_admin_password(store, no_server, monkeypatch, tmp_path, argv, parts):
    monkeypatch.setenv("AEPIPE_HOME", str(tmp_path / "home"))  # no users database yet
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    _one_line_exit_2(CliRunner().invoke(cli, ["ui", *argv]), *parts)


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_plans_allow_only_the_given_addresses(store, monkeypatch):
    from aepipe import ui

    local = ui.plan("127.0.0.1", 5005)
    assert "--app-name" not in local.args  # loopback: MLflow's UI as it is, without MLflow's private-network defaults
    assert _option(local.args, "--allowed-hosts").split(",") == ["localhost", "localhost:5005", "127.0.0.1",
                                                                 "127.0.0.1:5005", "[::1]", "[::1]:5005"]
    assert local.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "correct horse battery staple")
    exposed = ui.plan("0.0.0.0", 5005, expose=True, allowed_hosts=["10.0.0.7", "ml.lab.example", "fd00::7"], workers=3)
    assert _option(exposed.args, "--app-name") == "basic-auth"
    assert _option(exposed.args, "--allowed-hosts").split(",") == ["10.0.0.7", "10.0.0.7:5005", "ml.lab.example",
                                                                   "ml.lab.example:5005", "[fd00::7]", "[fd00::7]:5005"]
    assert _option(exposed.args, "--cors-allowed-origins").split(",") == ["http://10.0.0.7:5005", "http://ml.lab.example:5005",
                                                                          "http://[fd00::7]:5005"]
    assert _option(exposed.args, "--workers") == "3"
    assert (
        exposed.notice.startswith("EXPOSED: ") and "read and write" in exposed.notice and "basic-auth" in exposed.notice
    )
    assert "correct horse" not in " ".join(exposed.args) + exposed.notice  # the password stays in the environment
    lan = ui.plan("192.168.1.5", 5005, expose=True)
    assert _option(lan.args, "--allowed-hosts") == "192.168.1.5,192.168.1.5:5005"


@pytest.mark.parametrize("cpus, workers", [(1, 1), (2, 1), (3, 1), (8, 4), (64, 4)])
def test_the_worker_count_suits_the_machine(monkeypatch, cpus, workers):
    from aepipe import ui

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert ui.default_server_workers() == workers


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_server_that_ignores_sigterm_is_killed_with_its_children_after_the_grace(tmp_path):
    # the server stand-in ignores SIGTERM and leaves a child of its own, as MLflow's job runners did
    stubborn = textwrap.dedent("""
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", ignore_term])
        print(child.pid, flush=True)
        print(os.getpid(), flush=True)
        time.sleep(600)
    """)
    launcher = (f"from aepipe.ui import Plan, run; import sys; "
                f"sys.exit(run(Plan([sys.executable, '-c', {stubborn!r}], {{}}, ''), grace=1.0))")
    proc = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True, start_new_session=True)
    grandchild = server = None
    try:
        grandchild, server = int(proc.stdout.readline()), int(proc.stdout.readline())
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)  # the launcher only, as a service manager does
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - start < 3.0
        time.sleep(0.2)
        assert not _alive(server) and not _alive(grandchild)
    finally:
        for pid in (proc.pid, server, grandchild):
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _get(url: str, auth: str | None = None, host: str | None = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow  # a real MLflow server: 10-25 s on two cores
def test_an_exposed_ui_needs_a_login_allows_only_the_given_host_and_stops_on_sigterm(tmp_path):
    import psutil

    port = free_port()
    password = "t3st-" + base64.b32encode(os.urandom(10)).decode()
    env = {**os.environ, "AEPIPE_HOME": str(tmp_path / "mlruns"), "MLFLOW_AUTH_ADMIN_PASSWORD": password}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aepipe.cli", "ui", "--host", "0.0.0.0", "--port", str(port),
                                 "--expose", "--allowed-host", "127.0.0.1", "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    family: list[int] = []
    try:
        wait_for_http(f"{base}/health", proc, log=log)
        family += [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(family) >= 3  # aepipe, mlflow server, uvicorn
        assert log.read_text().startswith(f"EXPOSED: MLflow UI and REST API bound to http://0.0.0.0:{port}")
        api = f"{base}/api/2.0/mlflow/experiments/search?max_results=5"
        assert _get(api) == 401  # no login
        assert _get(f"{base}/") == 401
        assert _get(api, auth="admin:wrong") == 401
        assert _get(api, auth=f"admin:{password}") == 200
        # a private address that was not given: MLflow's default would let it through
        assert _get(api, auth=f"admin:{password}", host=f"192.168.1.20:{port}") == 403
        assert password not in log.read_text()
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - start < 5.0, f"stopped after {time.monotonic() - start:.1f} s"
        time.sleep(0.3)
        assert [pid for pid in family if _alive(pid)] == []
    finally:
        for pid in family or [proc.pid]:  # the server's own process group outlives a failed stop
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
