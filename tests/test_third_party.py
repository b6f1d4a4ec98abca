"""A plugin outside the core: the example WAE distribution and the new-plugin template, each
installed by pip into a separate folder and found only through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from helpers import make_distribution


def pip_install(source: Path, target: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def run(
    args: list[str], site: Path, home: Path, cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "AEPIPE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def run_here(args: list[str], site: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> subprocess.CompletedProcess:
    """``aepipe ARGS`` in this process with ``site`` on the path: the plugins installed there are
    found through their entry points, as in a process started with it on PYTHONPATH, and its
    warnings are one line on stderr, as ``main`` shows them."""
    import warnings

    from click.testing import CliRunner

    from aepipe import tracking
    from aepipe.cli import cli
    from aepipe.console import one_line_warnings

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("AEPIPE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.store.forget()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        one_line_warnings()
        result = CliRunner().invoke(cli, args)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.mark.slow
def test_example_wae_plugin_installs_trains_tunes_and_passes_its_tests(tmp_path, monkeypatch):
    """... beside a broken distribution (it fails at import): the broken one is listed as failed
    and `plugins --check` exits 2 naming it; the working one trains, tunes and passes its tests."""
    site, home = tmp_path / "site", tmp_path / "mlruns"
    example = ROOT / "examples" / "aepipe-wae"
    pip_install(example, site)
    make_distribution(site, "aepipe-broken", "0.3", {"broken": "aepipe_broken"},
                      {"aepipe_broken": "from aepipe import hookimpl\nraise ImportError('needs libfoo 2')\n"})
    # not in the test env itself
    assert not any(p.name.startswith("aepipe_wae") for p in Path(sys.prefix).rglob("aepipe_wae*"))
    out = run_here(["plugins", "--json"], site, home, monkeypatch)
    assert out.returncode == 0, out.stderr
    warning = ("Warning: plugin 'broken' (aepipe-broken 0.3), entry point 'broken = aepipe_broken' failed to load: "
               "ImportError: needs libfoo 2; skipped (block it with AEPIPE_BLOCK_PLUGINS=broken)")
    assert out.stderr.splitlines() == [warning]
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["broken"]["failed"] == "load: ImportError: needs libfoo 2" and rows["wae"]["failed"] is None
    assert rows["wae"]["distribution"] == "aepipe-wae" and rows["wae"]["version"] == "0.1.0"
    assert rows["wae"]["components"] == {"regularizer": ["mmd"], "variant": ["wae"]}
    out = run_here(["plugins", "--check", "--plugin", "broken"], site, home, monkeypatch)
    assert out.returncode == 2 and out.stderr.splitlines()[-1] == (
        "Error: --plugin broken: plugin 'broken' (aepipe-broken 0.3), entry point 'broken = aepipe_broken' failed to "
        "load: ImportError: needs libfoo 2"
    ), out.stderr
    pipeline = str(example / "aepipe_wae" / "wae.toml")
    out = run_here(
        ["train", pipeline, "--set", "train.epochs=3", "--set", "tracking.log_images=false", "--json"],
        site,
        home,
        monkeypatch,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.count("Warning: plugin 'broken'") == 1
    summary = json.loads(out.stdout)
    assert "test_prior_mmd" in summary["metrics"]
    out = run_here(["tune", pipeline, "--n-trials", "2", "--set", "train.epochs=2", "--set", "tracking.log_model=false",
                    "--set", "tracking.log_images=false", "--json"], site, home, monkeypatch)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["states"] == {"COMPLETE": 2}
    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example / "tests")], site, home,
              cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout


@pytest.mark.slow
def test_new_plugin_template_works_without_edits(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from aepipe.cli import cli

    result = CliRunner().invoke(cli, ["new-plugin", "aepipe-demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "aepipe-demo"
    assert {p.name for p in root.iterdir()} >= {"pyproject.toml", "README.md", "aepipe_demo", "tests"}
    again = CliRunner().invoke(cli, ["new-plugin", "aepipe-demo", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    bad = CliRunner().invoke(cli, ["new-plugin", "9lives", "--dir", str(tmp_path)])
    assert bad.exit_code == 2 and "starting with a letter" in bad.stderr
    for name, why in (("aepipe", "clashes with the installed distribution 'aepipe'"),
                      ("Aepipe_Plugins", "its package 'aepipe_plugins' would shadow a module that already exists here"),
                      ("click", "clashes with the installed distribution 'click'"),
                      ("aepipe-vanilla",
                       "its plugin name 'vanilla' is taken by aepipe's entry point 'vanilla = "
                       "aepipe_plugins.families.vanilla'"),
                      ("numpy-tools", None)):
        clash = CliRunner().invoke(cli, ["new-plugin", name, "--dir", str(tmp_path)])
        if why is None:
            assert clash.exit_code == 0, clash.stderr
        else:
            assert clash.exit_code == 2 and why in clash.stderr and not (tmp_path / name).exists(), (name, clash.stderr)

    site, home = tmp_path / "site", tmp_path / "mlruns"
    pip_install(root, site)
    rows = {r["name"]: r for r in json.loads(run_here(["plugins", "--json"], site, home, monkeypatch).stdout)}
    assert rows["demo"]["distribution"] == "aepipe-demo"
    assert rows["demo"]["components"] == {"regularizer": ["demo-code-l2"], "variant": ["demo"]}
    out = run_here(
        ["train", str(root / "aepipe_demo" / "pipeline.toml"), "--set", "train.epochs=2", "-q"], site, home, monkeypatch
    )
    assert out.returncode == 0, out.stderr[-2000:]
    out = run_here(["plugins", "--check", "--plugin", "demo"], site, home, monkeypatch)
    assert out.returncode == 0 and "every component passes" in out.stderr, out.stderr[-2000:]
    out = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")], site, home, cwd=root
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert "3 passed" in out.stdout or "4 passed" in out.stdout


def test_plugins_check_names_the_distribution_of_a_broken_component(tmp_path, monkeypatch):
    from helpers import make_distribution

    bad = '''
from aepipe import hookimpl

@hookimpl
def aepipe_register_encoders(register):
    from aepipe_plugins.networks.basic import MLPEncoder
    from aepipe.components import Encoding

    class Wide(MLPEncoder):
        name = "wide"
        def forward(self, x, y_onehot=None):
            enc = super().forward(x, y_onehot)
            return Encoding(enc.code.repeat(1, 2))

    register(Wide)
'''
    site = make_distribution(tmp_path / "site", "wide-dist", "2.0", {"wide": "wide_plugin"}, {"wide_plugin": bad})
    out = run_here(["plugins", "--check", "--plugin", "wide"], site, tmp_path / "mlruns", monkeypatch)
    assert out.returncode == 2
    assert (
        "problem: wide-dist 2.0: encoder 'wide':" in out.stderr
        and "code shape (16, 16), expected (16, 8)" in out.stderr
    )
