"""The component registry: components by kind and name, each with the plugin that registered it
(:class:`PluginInfo`). Built by :class:`~aepipe.plugins.AepipePluginManager` from the plugins' hooks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from aepipe import kinds
from aepipe.errors import ConfigError, PluginError


@dataclass
class PluginInfo:
    """Where a plugin came from."""

    name: str
    module: str
    dist: str | None = None
    version: str | None = None
    entry_point: str | None = None

    def describe(self) -> str:
        where = f"plugin '{self.name}'"
        if self.dist:
            where += f" ({self.dist} {self.version})"
        return where


@dataclass
class _Entry:
    obj: Any
    source: PluginInfo


class Registry:
    """Components by kind and name, each remembered with the plugin that registered it."""

    def __init__(self, failures: dict[str, Any] | None = None) -> None:
        self._entries: dict[str, dict[str, _Entry]] = {kind: {} for kind in kinds.NAMES}
        self.failures = failures if failures is not None else {}

    def add(self, kind: str, obj: Any, source: PluginInfo) -> Any:
        from aepipe import components

        spec = kinds.BY_NAME[kind]
        base = spec.base_class()
        if spec.instance:
            ok = isinstance(obj, base)
        else:
            ok = isinstance(obj, type) and issubclass(obj, base)
        if not ok:
            raise PluginError(
                f"{source.describe()} registered {obj!r} as a {kind}; expected "
                f"{'an instance' if spec.instance else 'a subclass'} of {spec.base.replace(':', '.')}",
                plugin=source.name,
            )
        name = getattr(obj, "name", "")
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"{source.describe()} registered a {kind} ({obj!r}) without a 'name'",
                plugin=source.name,
            )
        if not spec.instance:
            components.check_component_class(obj, source)
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"duplicate {kind} name '{name}': registered by {existing.source.describe()} "
                f"and by {source.describe()}",
                plugin=source.name,
            )
        self._entries[kind][name] = _Entry(obj, source)
        return obj

    def get(self, kind: str, name: str) -> Any:
        try:
            return self._entries[kind][name].obj
        except KeyError:
            available = ", ".join(sorted(self._entries[kind])) or "(none registered)"
            failed = "; ".join(f"{f.info.describe()}: {f.cause}" for f in self.failures.values())
            hint = f"; plugins that failed and might provide it: {failed}" if failed else ""
            raise ConfigError(f"unknown {kind} '{name}'; available: {available}{hint}") from None

    def source(self, kind: str, name: str) -> PluginInfo:
        return self._entries[kind][name].source

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def items(self, kind: str) -> Iterable[tuple[str, Any]]:
        return ((name, entry.obj) for name, entry in sorted(self._entries[kind].items()))

    def drop_plugin(self, plugin: str) -> None:
        """Forget every component ``plugin`` registered (it failed part way)."""
        for entries in self._entries.values():
            for name in [n for n, e in entries.items() if e.source.name == plugin]:
                del entries[name]

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for kind, entries in self._entries.items():
            for name, entry in sorted(entries.items()):
                if entry.source.name == plugin:
                    found.setdefault(kind, []).append(name)
        return found
