"""The ``aepipe`` program: the group with its commands and the plugins' commands, run with secrets
masked, warnings on one line, and a quick end once heavy libraries are loaded."""

from __future__ import annotations

import sys

import click

from aepipe.cli.exit import end_quickly, ending_quickly, install_quick_end
from aepipe.cli.group import add_plugin_commands, cli
from aepipe.console import one_line_warnings


def main() -> None:
    import signal

    from aepipe import plugin_isolation, secrets

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Ctrl-C as ever, told from a plugin's raise
        signal.signal(signal.SIGINT, plugin_isolation.interrupt)
    secrets.remember_environment()
    secrets.install()
    one_line_warnings()
    add_plugin_commands(cli)
    install_quick_end()  # before a command imports the libraries whose exit handlers must run first
    try:
        cli(prog_name="aepipe")
    except SystemExit as exc:
        # a light command (--help, plugins): the usual exit is quick
        if "torch" not in sys.modules and not ending_quickly():
            raise
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            click.echo(exc.code, err=True)
        end_quickly(code)
        raise SystemExit(code) from None
