"""How the ``aepipe`` process ends (:mod:`aepipe.cli.exit`): once a command asked for a quick end,
every exit handler registered after the program started runs (the libraries'), the exit code is
kept, and the interpreter's teardown is skipped; without one, the usual exit."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import atexit, sys
from aepipe.cli.exit import end_quickly, install_quick_end

class Torn:
    def __del__(self):
        print("torn down", flush=True)

keep = Torn()
install_quick_end()
atexit.register(lambda: print("library handler ran", flush=True))
if {quick}:
    end_quickly(3)
sys.exit(3)
"""


def _run(quick: bool) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM.format(quick=quick)], capture_output=True, text=True, timeout=120
    )


def test_a_quick_end_runs_the_exit_handlers_keeps_the_code_and_skips_the_teardown():
    done = _run(quick=True)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["library handler ran"], done.stdout


def test_without_a_quick_end_the_process_exits_as_usual():
    done = _run(quick=False)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["library handler ran", "torn down"], done.stdout
