"""What the CLI shows while a command runs: one-line warnings, INFO notes, the epoch progress,
and text with secrets masked. Light: rich is imported only for a progress bar on a terminal."""

from __future__ import annotations

import contextlib
import sys

import click


def masked(text: str) -> str:
    """``text`` with its secrets masked, on one line: a control character a user's input put in
    it (a newline, a carriage return) is shown escaped."""
    from aepipe.secrets import mask

    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in mask(text))


def one_line_warnings() -> None:
    """aepipe's own warnings (a skipped plugin) as one line on stderr, each once per command;
    other warnings as Python shows them."""
    import warnings

    shown: set[str] = set()
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("aepipe"):
            text = masked(str(message))
            if text not in shown:
                shown.add(text)
                click.echo(f"Warning: {text}", err=True)
            return
        default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


@contextlib.contextmanager
def notes(enabled: bool):
    """aepipe's INFO notes (for example how the data is fed) on stderr while a command runs."""
    import logging

    if not enabled:
        yield
        return
    logger, handler = logging.getLogger("aepipe"), logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Reporter:
    """A live progress bar on a terminal, one plain line per epoch otherwise."""

    def __init__(self, enabled: bool, total: int | None = None):
        self.enabled = enabled
        self.progress = None
        self.task = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]epoch"), MofNCompleteColumn(), BarColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), transient=False,
            )
            self.task = self.progress.add_task("train", total=total, info="")

    def __enter__(self):
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    def __call__(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = f"loss {metrics['loss']:.4g}  val_loss {metrics['val_loss']:.4g}"
        if self.progress:
            self.progress.update(self.task, completed=epoch, total=total, info=info)
        else:
            click.echo(f"epoch {epoch}/{total}  {info}", err=True)
