"""How the ``aepipe`` process ends once a command is done. With torch or MLflow loaded, tearing the
interpreter down (every module's objects freed one by one) takes 1-2 s and does nothing a finished
command needs: such a process ends right after its exit handlers ran, every stream flushed.

With public APIs only: :func:`install_quick_end` registers :func:`_end` with :mod:`atexit` as the
program starts, before any library a command imports registers its own handlers. atexit calls
handlers last registered first, so ``_end`` runs after all of theirs (MLflow's, torch's, a
plugin's), then ends the process with :func:`os._exit` before the teardown. (It used to run the
handlers itself through ``atexit._run_exitfuncs``, a private function of CPython.) The handlers
registered before it, by what ``aepipe`` imports to start (click and the standard library), are
light; the one of them that matters, :func:`logging.shutdown`, ``_end`` calls itself.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys


class _QuickEnd:
    """The exit code this process ends with once its exit handlers ran (None: the usual exit)."""

    code: int | None = None


def install_quick_end() -> None:
    """Register the quick end (see the module's docstring); call it before a command runs."""
    atexit.register(_end)


def end_quickly(code: int) -> None:
    """Have this process end with ``code`` right after its exit handlers, without the teardown."""
    _QuickEnd.code = code


def ending_quickly() -> bool:
    return _QuickEnd.code is not None


def _end() -> None:
    if _QuickEnd.code is None:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_QuickEnd.code)
