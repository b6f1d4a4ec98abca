"""``aepipe plugins``: the installed plugins as rows, and ``--check``: every plugin's components
through the conformance suite (:mod:`aepipe.testing`, which runs without pytest)."""

from __future__ import annotations

from typing import Any, Callable

from aepipe.errors import PluginError


def listing(pm: Any) -> list[dict[str, Any]]:
    """One row per plugin: distribution, version, module, hooks and components by kind; a plugin
    that failed to load says at which stage and why (``failed``)."""
    rows = []
    for name, info in sorted(pm.infos.items()):
        rows.append({"name": name, "distribution": info.dist, "version": info.version, "module": info.module,
                     "hooks": pm.hooks_of(name), "components": pm.registry.by_plugin(name), "failed": None})
    for name, failure in sorted(pm.failures.items()):
        info = failure.info
        rows.append({"name": name, "distribution": info.dist, "version": info.version, "module": info.module,
                     "hooks": [], "components": {}, "failed": f"{failure.stage}: {failure.cause}"})
    return rows


def check(pm: Any, only: str | None = None, echo: Callable[[str], None] = print) -> str:
    """Check every installed plugin (or plugin ``only``): hooks known, components through the
    conformance suite. Each problem and skipped check is told through ``echo``; problems end in a
    :class:`PluginError`; success returns the line to show."""
    from aepipe.testing import CheckSkipped, check_component, registered_components

    if only is not None and only not in pm.infos:
        if only in pm.failures:
            raise PluginError(f"--plugin {only}: {pm.failures[only].describe()}")
        raise PluginError(f"--plugin {only}: no such plugin; installed: {', '.join(sorted(pm.infos))}")
    problems = [f.describe() for name, f in sorted(pm.failures.items()) if only in (None, name)]
    for kind, name in registered_components(pm, plugin=only):
        info = pm.registry.source(kind, name)
        try:
            check_component(kind, name, pm)
        except CheckSkipped as exc:
            echo(f"skipped: {exc}")
        except BaseException as exc:  # noqa: BLE001 - every failure is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problems.append(f"{info.dist or info.name} {info.version or ''}: {kind} '{name}': {text}")
    for line in problems:
        echo(f"problem: {line}")
    if problems:
        raise PluginError(f"{len(problems)} problem(s) in installed plugins (listed above)")
    return (
        f"{'plugin ' + only if only else f'all {len(pm.infos)} plugins'}: every component passes the conformance suite"
    )
