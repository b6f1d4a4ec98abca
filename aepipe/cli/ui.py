"""``aepipe ui``: the MLflow UI over aepipe's tracking store."""

from __future__ import annotations

import click

from aepipe.cli.exit import end_quickly
from aepipe.cli.group import CONTEXT, cli
from aepipe.console import masked


@cli.command("ui", context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind: loopback unless --expose.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--expose",
    is_flag=True,
    help="Allow a --host beyond loopback: turns on MLflow's login (basic-auth; first start: "
    "MLFLOW_AUTH_ADMIN_PASSWORD) and allows only the --host and --allowed-host addresses.",
)
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="With --expose: a name or IP clients use to reach the UI (repeatable; needed for --host 0.0.0.0).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Server processes (default: one per two CPUs, at most 4).")
@click.pass_context
def ui_command(
    ctx: click.Context, host: str, port: int, expose: bool, allowed_hosts: tuple[str, ...], workers: int | None
) -> None:
    """Start the MLflow UI over aepipe's tracking store (on this machine only, unless --expose)."""
    from aepipe import ui as server

    code = server.serve(
        host, port, expose, allowed_hosts, workers, echo=lambda line: click.echo(masked(line), err=True)
    )
    end_quickly(code)  # the server has stopped: no second or two tearing down MLflow's modules
    ctx.exit(code)
