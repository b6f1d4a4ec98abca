"""``aepipe ui``: MLflow's tracking server (its UI and REST API) over aepipe's store, private
unless the user says otherwise.

* Bound to loopback by default. Any other address (``0.0.0.0``, a LAN address, a host name other
  than ``localhost``) needs ``expose=True`` (``--expose``); the server then runs MLflow's
  ``basic-auth`` app, so every request but ``/health`` needs a login, and its Host-header and
  CORS checks allow only the addresses given (the bound one and each ``--allowed-host``), not
  MLflow's default of every private address.
* The auth app's users live in ``AEPIPE_HOME/ui-auth.db``; its first start creates the admin
  user from ``MLFLOW_AUTH_ADMIN_PASSWORD`` (MLflow's variable; user ``admin`` unless
  ``MLFLOW_AUTH_ADMIN_USERNAME``). The session key (``MLFLOW_FLASK_SERVER_SECRET_KEY``) is made
  per start where none is set.
* Worker processes: one per two CPUs this process may use, at most :data:`MAX_WORKERS`. MLflow's job
  runner (GenAI evaluation jobs, which aepipe never starts) stays off.
* The server runs as a child in its own process group. SIGTERM or SIGINT stops it: uvicorn gets
  :data:`GRACE_SECONDS` to close its connections, then whatever is left of the group is killed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aepipe.errors import ConfigError

MAX_WORKERS = 4
#: seconds the server has to stop after SIGTERM before its processes are killed
GRACE_SECONDS = 3.0
AUTH_DB = "ui-auth.db"
AUTH_INI = "ui-auth.ini"
PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
_WILDCARD = {"0.0.0.0", "::", "[::]"}


@dataclass
class Plan:
    """The server to start: its command, the environment it adds, and what to tell the user."""

    args: list[str]
    env: dict[str, str]
    notice: str
    allowed_hosts: list[str] = field(default_factory=list)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (``localhost``, 127.x, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def default_server_workers() -> int:
    """One worker per two CPUs this process may run on (the UI serves a few people; each worker
    loads MLflow whole), at least one and at most :data:`MAX_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus // 2))


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _check_address(value: str, option: str) -> str:
    """``value`` if it is an IP address or a host name (what MLflow's checks compare exactly)."""
    try:
        ipaddress.ip_address(value[1:-1] if value.startswith("[") and value.endswith("]") else value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ConfigError(f"{option} {value!r}: expected a host name or IP address (no scheme, port, path or wildcard)")
    return value


def allowed_addresses(host: str, port: int, expose: bool, extra: tuple[str, ...] | list[str]) -> list[str]:
    """The Host headers the server accepts: each address with and without ``:port``."""
    names = ["localhost", "127.0.0.1", "[::1]"] if not expose and is_loopback(host) else []
    if host not in _WILDCARD:
        names.append(_bracketed(host))
    names += [_bracketed(_check_address(a, "--allowed-host")) for a in extra]
    names = list(dict.fromkeys(names))
    return [h for name in names for h in (name, f"{name}:{port}")]


def plan(host: str, port: int, expose: bool = False, allowed_hosts: tuple[str, ...] | list[str] = (),
         workers: int | None = None) -> Plan:
    """Check the options and build the ``mlflow server`` command (nothing starts)."""
    from aepipe import tracking
    from aepipe.secrets import mask

    _check_address(host, "--host")
    if not is_loopback(host) and not expose:
        raise ConfigError(
            f"--host {host}: not a loopback address; the UI would give everyone who can reach this machine "
            "read and write access to the tracking store with no login. Add --expose to serve it there "
            "behind MLflow's login (basic-auth), or keep the default 127.0.0.1"
        )
    if expose and host in _WILDCARD and not allowed_hosts:
        raise ConfigError(f"--host {host} --expose: name the address(es) clients will use (this machine's name or IP) "
                          "with --allowed-host; only those pass the server's Host and CORS checks")
    if allowed_hosts and not expose:
        raise ConfigError("--allowed-host: only with --expose (a loopback UI allows localhost, 127.0.0.1 and [::1])")
    uri = tracking.tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={mask(uri)} is an MLflow tracking server: its UI is served at that address already"
        )
    hosts = allowed_addresses(host, port, expose, allowed_hosts)
    auth, db = _auth_environment() if expose else ({}, None)  # before the store is touched
    origins = [f"http://{h}" for h in hosts if h.endswith(f":{port}")]
    n = workers or default_server_workers()
    # the store's URL travels in the environment: a password never shows in the process list
    env = {"MLFLOW_BACKEND_STORE_URI": uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    args = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(n),
            "--allowed-hosts", ",".join(hosts), "--cors-allowed-origins", ",".join(origins),
            "--uvicorn-opts", f"--timeout-graceful-shutdown {max(1, int(GRACE_SECONDS) - 1)}"]
    if tracking.uses_local_store():
        tracking.setup()  # the store created and migrated once, under its lock, not by the server racing others
        args += ["--default-artifact-root", tracking.artifact_root()]
    shown = f"http://{_bracketed(host)}:{port}"
    if not expose:
        notice = (f"MLflow UI on {shown} over {mask(uri)} ({n} worker(s)); an experiment's runs: "
                  f"{shown}/#/experiments/ID/runs (switch the top-left toggle to 'Model training')")
        return Plan(args, env, notice, hosts)
    env.update(auth)
    args += ["--app-name", "basic-auth"]
    reach = ", ".join(f"http://{h}" for h in hosts if h.endswith(f":{port}"))
    notice = (
        f"EXPOSED: MLflow UI and REST API bound to {shown} ({n} worker(s)), reachable as {reach} only: the whole "
        f"tracking store {mask(uri)} (runs, params, metrics, artifacts, models; read and write) to every user who "
        f"logs in (MLflow basic-auth; users in {db}, new users read only). Plain HTTP: put "
        "TLS in front of it beyond a trusted network"
    )
    return Plan(args, env, notice, hosts)


def _auth_environment() -> tuple[dict[str, str], Path]:
    """The basic-auth app's settings: its config file and users database under aepipe's home."""
    from aepipe import secrets as masking
    from aepipe.tracking import local_root

    import mlflow.environment_variables as mlflow_env

    try:
        import flask_wtf  # noqa: F401 - MLflow's auth app needs it (the mlflow[auth] extra)
    except ImportError:
        raise ConfigError("--expose needs MLflow's auth app: pip install 'mlflow[auth]'") from None
    if not hasattr(mlflow_env, "MLFLOW_AUTH_ADMIN_PASSWORD"):  # older auth apps fall back to a published password
        raise ConfigError(f"--expose: this MLflow's auth app does not read {PASSWORD_ENV}; upgrade MLflow (pip install "
                          "-U 'mlflow[auth]')")
    root = local_root()
    db = root / AUTH_DB
    password = os.environ.get(PASSWORD_ENV, "")
    masking.remember(secret=password or None)
    if not db.exists() and not password:
        user = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
        raise ConfigError(
            f"--expose: the first start creates the UI's admin user '{user}' in {db}: set its password in "
            f"{PASSWORD_ENV} (the environment, not the command line)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        ini = root / AUTH_INI
        ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{db}\nadmin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
            encoding="utf-8",
        )
    except OSError as exc:
        raise ConfigError(f"{root}: cannot write the UI's auth settings: {exc.strerror or exc} "
                          "(set AEPIPE_HOME to a writable folder)") from None
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_urlsafe(32)  # the same for every worker of this start
    return env, db


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(p: Plan, grace: float = GRACE_SECONDS) -> int:
    """Run the server until it exits or this process gets SIGTERM/SIGINT; then stop it (its
    whole process group) within ``grace`` seconds. Returns the exit code: 0 when stopped."""
    stopping: list[int] = []
    started: list[subprocess.Popen] = []

    def halt() -> None:
        proc = started[0]
        try:
            proc.send_signal(signal.SIGTERM)  # mlflow server passes it to uvicorn, which closes its workers
        except ProcessLookupError:
            pass
        timer = threading.Timer(grace, _kill_group, (proc.pid,))
        timer.daemon = True
        timer.start()

    def stop(signum, frame) -> None:
        if not stopping:
            stopping.append(signum)
            if started:
                halt()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}  # before the server exists
    try:
        started.append(subprocess.Popen(p.args, env={**os.environ, **p.env}, process_group=0))
        if stopping:  # asked to stop while it was starting
            halt()
        code = started[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started:
            _kill_group(started[0].pid)  # whatever the server left behind
    return 0 if stopping else code


def serve(host: str, port: int, expose: bool = False, allowed_hosts: tuple[str, ...] | list[str] = (),
          workers: int | None = None, echo=print) -> int:
    """Check, tell ``echo`` what is served to whom, run the server; its exit code."""
    p = plan(host, port, expose, allowed_hosts, workers)
    echo(p.notice)
    return run(p)

