"""Commands about plugins: ``plugins`` (the installed ones, and their check) and ``new-plugin`` (a ready one)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from aepipe.cli import group as cli_group
from aepipe.cli.group import CONTEXT, cli


@cli.command("plugins", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--check", is_flag=True, help="Validate every plugin: hooks known, components pass the conformance suite."
)
@click.option("--plugin", "only", default=None, help="With --check: only this plugin (entry-point name).")
def plugins_command(as_json: bool, check: bool, only: str | None) -> None:
    """List installed plugins: distribution, version, hooks and components."""
    from aepipe.usecases.plugins import check as check_plugins, listing

    pm = cli_group.plugin_manager()
    if check:
        click.echo(check_plugins(pm, only, echo=lambda line: click.echo(line, err=True)), err=True)
        return
    rows = listing(pm)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['name']}  ({row['distribution'] or 'no distribution'} {row['version'] or ''})  {row['module']}"
        )
        if row["failed"]:
            click.echo(f"    FAILED to {row['failed']}")
            continue
        click.echo(f"    hooks: {', '.join(row['hooks'])}")
        for kind, names in row["components"].items():
            click.echo(f"    {kind}s: {', '.join(names)}")


@cli.command(name="new-plugin", context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "--dir", "parent", default=".", type=click.Path(file_okay=False, path_type=Path), help="Where to create it."
)
def new_plugin_command(name: str, parent: Path) -> None:
    """Write a ready plugin distribution NAME (pyproject with the entry point, a component, a
    variant, a pipeline file and tests using aepipe.testing)."""
    from aepipe.template import write

    root = write(name, parent)
    click.echo(f"wrote {root}; next: cd {root} && pip install -e . && aepipe plugins && python -m pytest", err=True)
