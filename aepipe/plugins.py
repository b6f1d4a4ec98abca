"""The plugin manager and the component registry.

Plugins come from the ``aepipe`` entry-point group: first-party variants and third-party ones
alike. Environment switches:

* ``AEPIPE_BLOCK_PLUGINS=a,b``: do not load the entry points named ``a`` and ``b``.
* ``AEPIPE_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry point except those named in
  ``AEPIPE_PLUGINS=a,b``.
* ``AEPIPE_TRACE_HOOKS=1``: print every hook call and its result to stderr.
* ``AEPIPE_STRICT_PLUGINS=1``: a plugin that fails to load, register or validate is an error
  (exit 2) instead of being skipped with a warning (for a plugin author's CI).

A plugin that fails is skipped: one :class:`PluginWarning` line names its distribution, entry
point and cause, ``pm.failures`` keeps it, and everything else works. Entry points load in a
fixed order, aepipe's own first, so a third party's clash never knocks out a first-party plugin.

Importing this module imports neither torch nor any plugin.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterable

import pluggy

from aepipe import hookspecs, kinds
from aepipe.errors import ConfigError, PluginError

GROUP = "aepipe"
ENV_BLOCK = "AEPIPE_BLOCK_PLUGINS"
ENV_NO_AUTOLOAD = "AEPIPE_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS = "AEPIPE_PLUGINS"
ENV_TRACE = "AEPIPE_TRACE_HOOKS"
ENV_STRICT = "AEPIPE_STRICT_PLUGINS"

#: Registration hook of each component kind (from the one table in aepipe.kinds).
KIND_HOOKS = kinds.HOOKS
KINDS = kinds.NAMES
#: the name under which aepipe registers its own hook implementations (the training epoch)
CORE_PLUGIN = "aepipe.defaults"


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


class PluginWarning(UserWarning):
    """A plugin failed and was skipped (``AEPIPE_STRICT_PLUGINS=1`` makes it an error)."""


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


def _split_env(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class _Entry:
    obj: Any
    source: PluginInfo


class Registry:
    """Components by kind and name, each remembered with the plugin that registered it."""

    def __init__(self, failures: dict[str, PluginFailure] | None = None) -> None:
        self._entries: dict[str, dict[str, _Entry]] = {kind: {} for kind in KINDS}
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


class AepipePluginManager(pluggy.PluginManager):
    """pluggy's manager plus where each plugin came from and a lazily built registry."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: dict[str, PluginFailure] = {}
        self._registry: Registry | None = None

    def fail(self, info: PluginInfo, stage: str, cause: str, error: PluginError, registered: bool = True) -> None:
        """Skip a plugin that failed: unregister it (when ``registered``), remember why, warn in
        one line; with ``AEPIPE_STRICT_PLUGINS=1`` raise ``error`` instead."""
        failure = PluginFailure(info, stage, " ".join(cause.split()))
        if _env_flag(ENV_STRICT):
            raise error
        if registered and self.get_plugin(info.name) is not None:
            self.unregister(name=info.name)
        self.infos.pop(info.name, None)
        self.failures[info.name] = failure
        warnings.warn(f"{failure.describe()}; skipped (block it with {ENV_BLOCK}={info.name})", PluginWarning, stacklevel=2)

    def register_plugin(self, plugin: Any, name: str | None = None, info: PluginInfo | None = None) -> str:
        """Register ``plugin`` (a module or object with hookimpls), validating its hooks."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        info = info or PluginInfo(name=name, module=getattr(plugin, "__name__", type(plugin).__name__))
        try:
            registered = self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{info.describe()} is invalid: {exc}", plugin=name) from exc
        except ValueError as exc:  # same name or same object twice
            other = self.infos.get(name)
            extra = f" (already registered by {other.describe()})" if other else ""
            raise PluginError(f"cannot register {info.describe()}: {exc}{extra}", plugin=name) from exc
        if registered is None:  # blocked
            return name
        self.infos[name] = info
        self._registry = None
        return name

    def load_entry_points(self) -> None:
        """Load the ``aepipe`` entry points, honouring the blocking and autoload switches. A
        plugin that fails to load, register or validate is skipped (see :meth:`fail`)."""
        blocked = set(_split_env(ENV_BLOCK))
        for name in blocked:
            self.set_blocked(name)
        wanted = set(_split_env(ENV_PLUGINS))
        autoload = not _env_flag(ENV_NO_AUTOLOAD)
        for ep in _ordered(metadata.entry_points(group=GROUP)):
            if ep.name in blocked or self.has_plugin(ep.name):
                continue
            if not autoload and ep.name not in wanted:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                dist=dist.name if dist else None,
                version=dist.version if dist else None,
                entry_point=f"{ep.name} = {ep.value}",
            )
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
                cause = f"{type(exc).__name__}: {exc}"
                self.fail(info, "load", cause, PluginError(
                    f"plugin '{ep.name}' failed to load (entry point '{info.entry_point}' of "
                    f"{info.dist or 'an unknown distribution'} {info.version or ''}): "
                    f"{cause}; block it with {ENV_BLOCK}={ep.name}", plugin=ep.name), registered=False)
                continue
            try:
                self.register_plugin(plugin, name=ep.name, info=info)
            except PluginError as exc:
                self.fail(info, "register", str(exc), exc, registered=False)
        self.validate()

    def validate(self) -> None:
        """Every hook implementation names a real hook; a plugin with one that does not (a
        misspelling: the closest real hook is suggested) is skipped."""
        known = [name for name in dir(hookspecs) if name.startswith("aepipe_")]
        while True:
            try:
                self.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = exc.plugin if isinstance(exc.plugin, str) else self.get_name(exc.plugin) or repr(exc.plugin)
                info = self.infos.get(name) or PluginInfo(name, name)
                unknown = sorted(caller.name for caller in (self.get_hookcallers(self.get_plugin(name)) or [])
                                 if not caller.has_spec())
                hook = unknown[0] if unknown else "?"
                close = difflib.get_close_matches(hook, known, n=1)
                cause = f"implements an unknown hook '{hook}'" + (f"; did you mean '{close[0]}'?" if close else "")
                error = PluginError(f"{info.describe()} {cause}", plugin=info.name)
                self.fail(info, "validate", cause, error)
                if self.get_plugin(name) is not None:  # could not be skipped: stop here, not loop
                    raise error from exc

    # --- registry -----------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The components registered by every plugin (built on first use, then cached)."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry(self.failures)
        for kind, hook_name in KIND_HOOKS.items():
            hook = getattr(self.hook, hook_name)
            for impl in hook.get_hookimpls():  # in registration order: aepipe's own first
                if self.get_plugin(impl.plugin_name) is None:  # failed at an earlier kind
                    continue
                info = self.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, impl.plugin_name)
                others = [p for p in self.get_plugins() if p is not impl.plugin]
                caller = self.subset_hook_caller(hook_name, remove_plugins=others)

                def register(obj: Any, _kind: str = kind, _info: PluginInfo = info) -> Any:
                    return registry.add(_kind, obj, _info)

                try:
                    caller(register=register)
                except Exception as exc:  # noqa: BLE001 - a failed plugin is skipped, whatever it raised
                    if isinstance(exc, PluginError):
                        error = exc
                    else:
                        error = PluginError(f"{info.describe()} failed in {hook_name}: {type(exc).__name__}: {exc}",
                                            plugin=info.name)
                    registry.drop_plugin(info.name)
                    self.fail(info, "register", str(error), error)
        return registry

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.get_plugin(name)
        return sorted(caller.name for caller in (self.get_hookcallers(plugin) or []))

    def call_plugin_hook(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a hook as pluggy intends (wrappers around every implementation); an exception is
        re-raised as a PluginError naming the plugin in whose hook code it was raised.
        aepipe's own implementations raise their errors as they are."""
        try:
            return getattr(self.hook, hook_name)(**kwargs)
        except Exception as exc:  # noqa: BLE001
            plugin = self._raised_by(hook_name, exc)
            if plugin is None or plugin == CORE_PLUGIN or isinstance(exc, PluginError):
                raise
            info = self.infos.get(plugin) or PluginInfo(plugin, plugin)
            raise PluginError(
                f"{info.describe()} raised in {hook_name}: {type(exc).__name__}: {exc}",
                plugin=info.name,
            ) from exc

    def _raised_by(self, hook_name: str, exc: BaseException) -> str | None:
        """The plugin whose implementation of ``hook_name`` (plain or wrapper) was innermost on
        ``exc``'s traceback."""
        owners = {}
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            code = getattr(impl.function, "__code__", None)
            if code is not None:
                owners[code] = impl.plugin_name
        found = None
        tb = exc.__traceback__
        while tb is not None:
            found = owners.get(tb.tb_frame.f_code, found)
            tb = tb.tb_next
        return found


def _ordered(entry_points: Iterable[Any]) -> list[Any]:
    """aepipe's own entry points first, then the others by distribution and name: the same
    order on every machine, and a clash is always blamed on the third party."""
    def key(ep: Any) -> tuple[bool, str, str]:
        dist = getattr(ep, "dist", None)
        name = (dist.name if dist else "") or ""
        return (name.lower() != "aepipe", name.lower(), ep.name)

    return sorted(entry_points, key=key)


def get_plugin_manager(*, load_entry_points: bool = True) -> AepipePluginManager:
    """A new plugin manager with every installed plugin loaded and validated.

    No global state: each call builds a fresh manager.
    """
    pm = AepipePluginManager()
    from aepipe import defaults

    pm.register(defaults, name=CORE_PLUGIN)  # aepipe's own hook implementations, called last
    if _env_flag(ENV_TRACE):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    if load_entry_points:
        pm.load_entry_points()
    return pm
