"""What a plugin cannot do to a command: end or silence it (whatever its code raises is that plugin's
failure, told in one line; only a real signal passes through as itself, :func:`raised_by_signal`),
or print into its stdout (:func:`plugin_output`). And how a skipped plugin is told: :class:`PluginFailure`,
:class:`PluginWarning`, :class:`SlowPluginWarning`."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from aepipe.registry import PluginInfo


class PluginWarning(UserWarning):
    """A plugin failed and was skipped (``AEPIPE_STRICT_PLUGINS=1`` makes it an error)."""


class SlowPluginWarning(UserWarning):
    """A plugin took more than ``AEPIPE_SLOW_PLUGIN_SECONDS`` to import (every command waits for it)."""


def interrupt(signum: int, frame: Any) -> None:
    """SIGINT's handler while the CLI runs: Python's own behaviour (``KeyboardInterrupt``), raised
    from a Python frame, so that :func:`raised_by_signal` tells a user's Ctrl-C from a plugin's
    ``raise KeyboardInterrupt``."""
    raise KeyboardInterrupt


def raised_by_signal(exc: BaseException) -> bool:
    """Whether ``exc`` is a signal's ``KeyboardInterrupt`` (a user's Ctrl-C) rather than one some
    code raised: the innermost frame of its traceback is a signal handler installed now (the
    CLI's :func:`interrupt`, a training run's stop handler), or it has no frame at all. With
    C's default handler installed a signal leaves no frame of its own, and the exception is
    taken as raised where it stood."""
    if not isinstance(exc, KeyboardInterrupt):
        return False
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return True
    code = last.tb_frame.f_code
    handlers = [signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)] + [interrupt]
    return any(getattr(getattr(h, "__func__", h), "__code__", None) is code for h in handlers)


def describe_exception(exc: BaseException) -> str:
    """``exc`` in words, on one line; a ``SystemExit`` says that it would have ended the command."""
    text = " ".join(str(exc).split())
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (a plugin may not end the command)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_stdout_lock = threading.Lock()
_stdout_depth = 0
_stdout_saved: Any = None


@contextlib.contextmanager
def plugin_output():
    """While a plugin's code runs (its import, its hooks), what it prints to ``sys.stdout`` goes
    to stderr: stdout carries the command's result (``--json``). Nested and threaded calls
    share one redirection, undone when the last one ends."""
    global _stdout_depth, _stdout_saved
    with _stdout_lock:
        if _stdout_depth == 0:
            _stdout_saved, sys.stdout = sys.stdout, sys.stderr
        _stdout_depth += 1
    try:
        yield
    finally:
        with _stdout_lock:
            _stdout_depth -= 1
            if _stdout_depth == 0:
                sys.stdout, _stdout_saved = _stdout_saved, None


@dataclass
class PluginFailure:
    """A plugin that was skipped: where it came from, what it failed at, and why."""

    info: PluginInfo
    stage: str  #: "load", "register" or "validate"
    cause: str

    def describe(self) -> str:
        where = self.info.describe()
        if self.info.entry_point:
            where += f", entry point '{self.info.entry_point}'"
        return f"{where} failed to {self.stage}: {self.cause}"
