"""The ``aepipe`` command group: its options, the plugins' commands, and every error mapped to one
line and an exit code. The commands register themselves on :data:`cli` from the modules beside this one."""

from __future__ import annotations

import click

from aepipe.console import masked as _masked
from aepipe.errors import AepipeError
from aepipe.version import __version__

CONTEXT = {"help_option_names": ["-h", "--help"]}


#: the libraries between aepipe and a tracking store: their errors mean the store failed
STORE_LIBRARIES = {"mlflow", "sqlalchemy", "requests", "urllib3", "psycopg", "alembic"}


class AepipeGroup(click.Group):
    """Turns every :class:`AepipeError`, and every wrong option or argument, into one line on
    stderr and its exit code (2 for both)."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if not ctx.resilient_parsing and not {"-h", "--help"} & set(rest):  # help is always shown
            from aepipe import secrets

            secrets.check_environment()  # a URL that parsers read apart is refused before any command
        return name, command, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AepipeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if not getattr(exc, "reported", False):  # told already: by --nproc's processes, or by rank 0
                click.echo(f"Error: {_masked(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except (SystemExit, GeneratorExit) as exc:  # aepipe's commands never end this way: a plugin's code did
            if ctx.obj and ctx.obj.get("debug") or ctx.invoked_subcommand in _PLUGIN_COMMANDS:
                raise  # a plugin's own command may end as it likes
            from aepipe.plugin_isolation import describe_exception

            info = plugin_manager().blame(exc)
            who = info.describe() if info else "code called by the command"
            click.echo(f"Error: {_masked(who)} raised {describe_exception(exc)}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            message = _masked(" ".join(exc.format_message().split()))
            click.echo(f"Error: {message} (see '{where} -h')", err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the tracking store's libraries, failing to reach it
            if ctx.obj and ctx.obj.get("debug") or type(exc).__module__.split(".")[0] not in STORE_LIBRARIES:
                raise
            from aepipe.tracking.error_line import error_line
            from aepipe.tracking.health import DAMAGED, recovery_hint
            from aepipe.tracking.store import tracking_uri

            line = error_line(exc)[:600]  # the root cause, not SQLAlchemy's framing
            hint = f"; {recovery_hint()}" if DAMAGED.search(line) else ""
            click.echo(f"Error: the tracking store {_masked(tracking_uri())} failed: {type(exc).__name__}: "
                       f"{_masked(line)}{hint} (aepipe --debug shows the traceback)", err=True)
            ctx.exit(2)


@click.group(cls=AepipeGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="aepipe")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """aepipe: train, compare and extend autoencoders; runs are tracked in MLflow."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def plugin_manager():
    from aepipe.plugins import get_plugin_manager

    return get_plugin_manager()


def add_plugin_commands(group: click.Group) -> None:
    """Let plugins add commands; a broken plugin is reported by the command that needs it."""
    from aepipe.errors import PluginError

    before = set(group.commands)
    try:
        pm = plugin_manager()
        pm.call_plugin_hook("aepipe_cli_commands", cli=group)
    except PluginError:
        pass
    _PLUGIN_COMMANDS.update(set(group.commands) - before)


#: the commands plugins added (``aepipe_cli_commands``): theirs to end as they like
_PLUGIN_COMMANDS: set[str] = set()
