"""The one masking function, on every form a secret takes in a URL; other text is untouched."""

from __future__ import annotations

import pytest

from aepipe.secrets import mask, secrets_of


@pytest.mark.parametrize("url, expected", [
    ("postgresql+psycopg://aepipe:s3cret@127.0.0.1:5432/db", "postgresql+psycopg://aepipe:***@127.0.0.1:5432/db"),
    ("postgresql+psycopg://aepipe:p@ss@w0rd@dbhost/db", "postgresql+psycopg://aepipe:***@dbhost/db"),  # raw @
    # percent-encoded
    ("postgresql+psycopg://aepipe:p%40ss%3Aw@dbhost/db", "postgresql+psycopg://aepipe:***@dbhost/db"),
    ("postgresql+psycopg://aepipe@dbhost/db?password=hunter22&sslmode=require",
     "postgresql+psycopg://aepipe@dbhost/db?password=***&sslmode=require"),
    ("https://host/api?token=abc&x=1&API_KEY=zz#frag", "https://host/api?token=***&x=1&API_KEY=***#frag"),
    ("journal:////tmp/mlruns/optuna.journal", "journal:////tmp/mlruns/optuna.journal"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("postgresql+psycopg://aepipe@dbhost/db", "postgresql+psycopg://aepipe@dbhost/db"),  # no password
])
def test_every_url_form(url, expected):
    assert mask(url) == expected
    assert mask(f"cannot open {url}: refused") == f"cannot open {expected}: refused"


def test_a_quoted_secret_is_masked_as_a_whole_word_only():
    url = "postgresql+psycopg://u:u@dbhost/db"
    secrets = secrets_of(url)
    assert "u" in secrets
    message = 'connection to server failed: Connection refused (user "u", password u)'
    assert mask(message, secrets) == 'connection to server failed: Connection refused (user "***", password ***)'
    assert "refused" in mask(message, secrets) and "ref***sed" not in mask(message, secrets)
    assert set(secrets_of("postgresql+psycopg://a:p%40ss@h/d?password=x%21")) == {"p%40ss", "p@ss", "x%21", "x!"}
    plain = "Training diverged at epoch 3: loss = nan (lower train.lr)"
    assert mask(plain, ["at", "3"]) == "Training diverged *** epoch ***: loss = nan (lower train.lr)"
    assert mask(plain) == plain


def test_a_tracking_store_that_fails_is_one_line_with_its_password_masked(tmp_path):
    """An MLflow server that cannot be reached, at a URL with a password: exit 2, one line,
    no traceback, the password nowhere in the output."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://alice:Sup3rSecret@127.0.0.1:9/",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
           "AEPIPE_HOME": str(tmp_path / "mlruns")}
    out = subprocess.run(
        [sys.executable, "-m", "aepipe.cli", "compare", "-e", "x"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 2, out.stderr
    assert "Sup3rSecret" not in out.stderr + out.stdout and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Error: the tracking store http://alice:***@127.0.0.1:9/ failed: "
    ), lines


def test_remembered_secrets_are_masked_in_every_log_record_and_traceback(tmp_path):
    """Once installed (every aepipe command does), a library's log line or an uncaught error that
    quotes a remembered URL or password shows it masked."""
    import os
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "from aepipe import secrets\n"
        "secrets.remember_environment(); secrets.install()\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "logging.getLogger('sqlalchemy.engine').warning('connecting to %s as %s', 'postgresql://bob:hunter22@db/x', "
        "'bob')\nlogging.getLogger('psycopg').error('password authentication failed: hunter22 rejected')\n"
        "raise RuntimeError('cannot reach MLflow at http://bob:tok3n@h/ with token tok3n')\n"
    )
    env = {**os.environ, "AEPIPE_STORAGE": "postgresql+psycopg://bob:hunter22@db/x", "MLFLOW_TRACKING_TOKEN": "tok3n"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    text = out.stdout + out.stderr
    assert "hunter22" not in text and "tok3n" not in text, text
    assert "connecting to postgresql://bob:***@db/x as bob" in out.stdout
    assert "password authentication failed: *** rejected" in out.stdout
    assert "RuntimeError: cannot reach MLflow at http://bob:***@h/ with token ***" in out.stderr


def test_a_url_secret_in_a_runs_settings_never_reaches_the_store(tmp_path, monkeypatch):
    """A pipeline whose settings hold a URL with a password (a description quoting a database):
    the run's params, tags and logged pipeline show it masked."""
    from aepipe import tracking
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import train

    monkeypatch.setenv("AEPIPE_HOME", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.store.forget()
    pm = get_plugin_manager()
    pipeline = resolve(pm, tree={"variant": "vanilla",
                                 "description": "data from postgresql://bob:hunter22@db/x?token=abc",
                                 "train": {"epochs": 1, "optimizer": "adam"},
                                 "tracking": {"log_model": False, "log_images": False, "log_dataset": False}})
    result = train(pipeline, pm)
    run = tracking.default_tracker().client.get_run(result.run_id)
    stored = " ".join([*run.data.params.values(), *run.data.tags.values()])
    path = tracking.default_tracker().client.download_artifacts(result.run_id, "pipeline.toml", str(tmp_path))
    stored += open(path).read()
    assert "hunter22" not in stored and "token=abc" not in stored
    assert "postgresql://bob:***@db/x?token=***" in stored and run.data.params["train.optimizer"] == "adam"


# --- URLs that parsers read differently (issue 19, item 7) ----------------------------------------

#: a password with raw "@"s: each fragment is 3 characters that must appear in no message
RAW_AT = "postgresql+psycopg://aepipe:Xq9@Zt7@Wk5@dbhost:5432/db"
FRAGMENTS = ("Xq9", "Zt7", "Wk5")

AMBIGUOUS = [
    RAW_AT,
    "postgresql+psycopg://aepipe:pa/ss@dbhost/db",  # urllib: the host is "aepipe", the port "pa"
    "postgresql+psycopg://aepipe:pa:ss@dbhost/db",  # a second ":"
    "postgresql+psycopg://aepipe:pa?ss@dbhost/db",
    "postgresql+psycopg://aepipe:pa#ss@dbhost/db",
    "http://alice:pa ss@host/",
    "http://alice:100%@host/",  # "%" that starts no escape
    "postgresql+psycopg://ali@ce:pass@dbhost/db",  # an "@" in the user name
    "http://host:5000/path@x",  # SQLAlchemy reads "5000/path" as a password
]
UNAMBIGUOUS = [
    "postgresql+psycopg://aepipe:s3cret@127.0.0.1:5432/db",
    "postgresql+psycopg://aepipe:Xq9%40Zt7%3AWk5%2F@dbhost/db",  # percent-encoded
    "postgresql+psycopg://aepipe:p!$&'()*+,;=~-._@dbhost/db",  # every character RFC 3986 allows raw
    "postgresql+psycopg://aepipe@dbhost/db?password=x&options=a@b",  # an "@" in the query
    "postgresql+psycopg://aepipe:pw@[::1]:5432/db",
    "journal:///tmp/a@b:c/optuna.journal",
    "sqlite:///C:/runs@x/mlflow.db",
    "file:///tmp/a@b",
    "http://127.0.0.1:5000",
    "http://host/path@x",
    "./mlruns",
]


@pytest.mark.parametrize("url", AMBIGUOUS)
def test_a_url_that_parsers_read_differently_is_refused_without_a_fragment(url):
    from aepipe.errors import ConfigError
    from aepipe.secrets import ambiguous, check_url

    assert ambiguous(url)
    with pytest.raises(ConfigError) as exc:
        check_url(url, "--storage")
    message = str(exc.value)
    scheme = url.partition("://")[0]
    assert (
        message.startswith(f"--storage: the user name or password of this {scheme}:// URL holds a character")
        and "\n" not in message
    )
    assert "percent-encode it" in message and "the URL is not shown" in message
    with pytest.raises(ConfigError) as other:  # the same words for any URL of the scheme: no part of it is shown
        check_url(f"{scheme}://someone:a@b@elsewhere/x", "--storage")
    assert message == str(other.value)


@pytest.mark.parametrize("url", UNAMBIGUOUS)
def test_a_url_every_parser_reads_alike_is_accepted(url):
    from urllib.parse import unquote, urlsplit

    from sqlalchemy.engine import make_url

    from aepipe.secrets import ambiguous, check_url

    assert not ambiguous(url)
    check_url(url, "--storage")
    if "@" in urlsplit(url).netloc:  # both read the same password (SQLAlchemy's decoded)
        password = urlsplit(url).password
        assert make_url(url).password == (unquote(password) if password is not None else None)


def test_why_it_is_refused_sqlalchemy_and_urllib_split_a_raw_at_apart():
    """Pins the disagreement: SQLAlchemy ends the password at the first "@" and names the rest
    as the host (which the driver then quotes, failing to resolve it); urllib ends it at the last."""
    from urllib.parse import urlsplit

    from sqlalchemy.engine import make_url

    assert make_url(RAW_AT).password == "Xq9" and make_url(RAW_AT).host == "Zt7@Wk5@dbhost"
    assert urlsplit(RAW_AT).password == "Xq9@Zt7@Wk5" and urlsplit(RAW_AT).hostname == "dbhost"


@pytest.mark.parametrize("where", ["MLFLOW_TRACKING_URI", "AEPIPE_STORAGE", "--storage"])
def test_every_command_refuses_an_ambiguous_store_url_in_one_line(tmp_path, where):
    from click.testing import CliRunner

    from aepipe.cli import cli

    (tmp_path / "p.toml").write_text(
        'variant = "vanilla"\n[tune.space]\n"train.lr" = {low = 1e-4, high = 1e-2, log = true}\n'
    )
    env = {"AEPIPE_HOME": str(tmp_path / "mlruns"), "MLFLOW_TRACKING_URI": None, "AEPIPE_STORAGE": None}
    args = ["tune", str(tmp_path / "p.toml")]
    if where == "--storage":
        args += ["--storage", RAW_AT]
    else:
        env[where] = RAW_AT
    result = CliRunner().invoke(cli, args if where != "MLFLOW_TRACKING_URI" else ["compare", "-e", "x"], env=env)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {where}: the user name or password of this postgresql+psycopg:// URL"), lines[0]
    assert not any(fragment in result.output for fragment in FRAGMENTS)
    assert not (tmp_path / "mlruns").exists()  # refused before any store is opened
    if where != "--storage":  # help is still shown
        helped = CliRunner().invoke(cli, ["compare", "--help"], env=env)
        assert helped.exit_code == 0 and "Usage:" in helped.output


def test_tuning_from_python_refuses_it_too(aepipe_pm):
    from aepipe.errors import ConfigError
    from aepipe.tune.study import prepare_study

    with pytest.raises(ConfigError, match=r"^--storage: the user name or password .*the URL is not shown$") as exc:
        prepare_study(aepipe_pm, "pipelines/vanilla.toml", storage_url=RAW_AT)
    assert not any(fragment in str(exc.value) for fragment in FRAGMENTS)
