"""``aepipe plugins --check`` runs the conformance suite without pytest (a dev extra only), and
under pytest a check that cannot run here is a skipped test."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import make_distribution

pytest_plugins = ["pytester"]

#: ``aepipe`` with pytest unimportable, as on a plain install
NO_PYTEST = ("import sys; sys.modules['pytest'] = None; sys.argv[0] = 'aepipe'; "
             "from aepipe.cli import main; main()")

BROKEN = '''
from aepipe import hookimpl


@hookimpl
def aepipe_register_corruptions(register):
    from pydantic import ConfigDict
    from aepipe.components import ComponentConfig, Corruption

    class LooseConfig(ComponentConfig):
        model_config = ConfigDict(extra="allow")

    class Loose(Corruption):
        """Keeps its input; its settings accept anything."""
        name = "loose"
        Config = LooseConfig

        def forward(self, x):
            return x

    class Halve(Corruption):
        """Drops half of the columns."""
        name = "halve"

        def forward(self, x):
            return x[:, : x.shape[1] // 2]

    register(Loose)
    register(Halve)
'''


def _check_without_pytest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_PYTEST, "plugins", "--check", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_the_check_runs_without_pytest_and_lists_what_it_skipped():
    out = _check_without_pytest("--plugin", "datasets")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "pytest" not in out.stderr
    assert "skipped: dataset 'file' (plugin 'datasets' (aepipe " in out.stderr
    assert "needs settings to load: path" in out.stderr
    assert "skipped: dataset 'digits'" not in out.stderr  # embedded: checked, not skipped
    assert out.stderr.rstrip().endswith("plugin datasets: every component passes the conformance suite")


def test_failing_components_still_exit_2_without_pytest(tmp_path):
    site = make_distribution(tmp_path / "site", "broken-dist", "1.0", {"broken": "broken_plugin"},
                             {"broken_plugin": BROKEN})
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = _check_without_pytest("--plugin", "broken", env=env)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert ("problem: broken-dist 1.0: corruption 'loose': corruption 'loose' (plugin 'broken' (broken-dist 1.0)): "
            "Config accepts an unknown setting ('__not_a_setting__')") in out.stderr
    assert "problem: broken-dist 1.0: corruption 'halve': corruption 'halve' (plugin 'broken' (broken-dist 1.0)): " \
           "corruption changed the shape or gave NaN" in out.stderr
    assert "2 problem(s) in installed plugins" in out.stderr


def test_under_pytest_a_check_that_cannot_run_is_a_skipped_test(pytester):
    pytester.makepyfile('''
        from aepipe.testing import check_component

        def test_file_dataset():
            check_component("dataset", "file")

        def test_a_failure_stays_a_failure():
            check_component("dataset", "nope-not-registered")
    ''')
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines(["SKIPPED*dataset 'file' (plugin 'datasets'*needs settings to load: path"])
