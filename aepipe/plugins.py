"""The plugin manager and the component registry.

Plugins come from the ``aepipe`` entry-point group: first-party variants and third-party ones
alike. Environment switches:

* ``AEPIPE_BLOCK_PLUGINS=a,b``: do not load the entry points named ``a`` and ``b``.
* ``AEPIPE_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry point except those named in
  ``AEPIPE_PLUGINS=a,b``.
* ``AEPIPE_TRACE_HOOKS=1``: print every hook call and its result to stderr.
* ``AEPIPE_STRICT_PLUGINS=1``: a plugin that fails to load, register or validate is an error
  (exit 2) instead of being skipped with a warning (for a plugin author's CI).
* ``AEPIPE_SLOW_PLUGIN_SECONDS=3``: a plugin whose import takes longer is named in a warning.

A plugin that fails is skipped: one :class:`PluginWarning` line names its distribution, entry
point and cause, ``pm.failures`` keeps it, and everything else works. Entry points load in a
fixed order, aepipe's own first, so a third party's clash never knocks out a first-party plugin.

A plugin cannot end or silence a command: whatever its import or its hooks raise, ``SystemExit``,
``KeyboardInterrupt`` and any other ``BaseException`` included, is that plugin's failure (its
import: skipped; a hook: a :class:`PluginError` naming it). Only a real signal (a user's Ctrl-C,
raised by a Python signal handler: see :func:`raised_by_signal`) passes through as itself. What a
plugin prints while it is imported or its hooks run goes to stderr: stdout is the command's.

The registry the manager builds is :mod:`aepipe.registry`; what keeps a plugin from ending,
silencing or printing into a command is :mod:`aepipe.plugin_isolation`; the metric names a hook may
return, :mod:`aepipe.metric_names`.

Importing this module imports neither torch nor any plugin.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
import time
import warnings
from importlib import metadata
from typing import Any, Iterable

import pluggy

from aepipe import hookspecs, kinds
from aepipe.errors import PluginError
from aepipe.metric_names import bad_metric_name
from aepipe.plugin_isolation import (
    PluginFailure,
    PluginWarning,
    SlowPluginWarning,
    describe_exception,
    plugin_output,
    raised_by_signal,
)
from aepipe.registry import PluginInfo, Registry

GROUP = "aepipe"
ENV_BLOCK = "AEPIPE_BLOCK_PLUGINS"
ENV_NO_AUTOLOAD = "AEPIPE_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS = "AEPIPE_PLUGINS"
ENV_TRACE = "AEPIPE_TRACE_HOOKS"
ENV_STRICT = "AEPIPE_STRICT_PLUGINS"
ENV_SLOW = "AEPIPE_SLOW_PLUGIN_SECONDS"
#: a plugin import slower than this many seconds is named in a warning (``AEPIPE_SLOW_PLUGIN_SECONDS``)
SLOW_IMPORT_SECONDS = 3.0

#: Registration hook of each component kind (from the one table in aepipe.kinds).
KIND_HOOKS = kinds.HOOKS
KINDS = kinds.NAMES
#: the name under which aepipe registers its own hook implementations (the training epoch)
CORE_PLUGIN = "aepipe.defaults"


class _Metrics(dict):
    """A hook's metrics, with the plugin whose implementation returned them."""

    plugin: str = ""


def _split_env(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class AepipePluginManager(pluggy.PluginManager):
    """pluggy's manager plus where each plugin came from and a lazily built registry."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: dict[str, PluginFailure] = {}
        self._registry: Registry | None = None

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """pluggy's ``register``, with the metrics the plugin's hooks return tagged with its name."""
        registered = super().register(plugin, name=name)
        if registered is not None:
            self._tag_metrics(registered)
        return registered

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
        warnings.warn(
            f"{failure.describe()}; skipped (block it with {ENV_BLOCK}={info.name})", PluginWarning, stacklevel=2
        )

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
            started = time.perf_counter()
            try:
                with plugin_output():
                    plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - any import failure, SystemExit included, is the plugin's
                if raised_by_signal(exc):
                    raise
                cause = describe_exception(exc)
                self.fail(info, "load", cause, PluginError(
                    f"plugin '{ep.name}' failed to load (entry point '{info.entry_point}' of "
                    f"{info.dist or 'an unknown distribution'} {info.version or ''}): "
                    f"{cause}; block it with {ENV_BLOCK}={ep.name}", plugin=ep.name), registered=False)
                continue
            seconds = time.perf_counter() - started
            if seconds > _slow_import_seconds():
                warnings.warn(f"{info.describe()}, entry point '{info.entry_point}', took {seconds:.1f} s to import "
                              f"(every aepipe command waits for it; block it with {ENV_BLOCK}={ep.name})",
                              SlowPluginWarning, stacklevel=2)
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
                    with plugin_output():
                        caller(register=register)
                except BaseException as exc:  # noqa: BLE001 - a failed plugin is skipped, whatever it raised
                    if raised_by_signal(exc):
                        raise
                    if isinstance(exc, PluginError):
                        error = exc
                    else:
                        error = PluginError(f"{info.describe()} failed in {hook_name}: {describe_exception(exc)}",
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
        hook = getattr(self.hook, hook_name)
        theirs = any(impl.plugin_name != CORE_PLUGIN for impl in hook.get_hookimpls())
        try:
            with plugin_output() if theirs else contextlib.nullcontext():
                result = hook(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - SystemExit and the like too: a plugin never ends the command
            if raised_by_signal(exc):
                raise
            plugin = self._raised_by(hook_name, exc)
            if plugin is None or plugin == CORE_PLUGIN or isinstance(exc, PluginError):
                raise
            info = self.infos.get(plugin) or PluginInfo(plugin, plugin)
            raise PluginError(
                f"{info.describe()} raised in {hook_name}: {describe_exception(exc)}",
                plugin=info.name,
            ) from exc
        if hook_name in _METRIC_HOOKS:
            self._check_metrics(hook_name, result)
        return result

    def _check_metrics(self, hook_name: str, results: list[Any]) -> None:
        """Every metric name a hook returned can be tracked; otherwise one error naming the
        plugin that returned it (tagged by :meth:`_tag_metrics`) and the name."""
        for metrics in results or ():
            for name in metrics or {}:
                prefixed = _METRIC_HOOKS[hook_name] + name if isinstance(name, str) else name
                why = bad_metric_name(prefixed)
                if why is None:
                    continue
                plugin = getattr(metrics, "plugin", "") or "?"
                info = self.infos.get(plugin) or PluginInfo(plugin, plugin)
                raise PluginError(f"{info.describe()} returned the metric {name!r} from {hook_name}, a name a tracking "
                                  f"store refuses: {why}", plugin=info.name)

    def _tag_metrics(self, plugin_name: str) -> None:
        """Wrap ``plugin_name``'s implementations of the hooks that return metrics, so that each
        dict they return says which plugin returned it (pluggy's results do not)."""
        for hook_name in _METRIC_HOOKS:
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                if impl.plugin_name != plugin_name or impl.hookwrapper or getattr(impl, "wrapper", False):
                    continue
                if hasattr(impl.function, "_aepipe_plugin_function"):  # tagged already
                    continue

                def tagged(*args: Any, _function: Any = impl.function, _plugin: str = plugin_name) -> Any:
                    out = _function(*args)
                    if isinstance(out, dict):
                        out = _Metrics(out)
                        out.plugin = _plugin
                    return out

                tagged._aepipe_plugin_function = impl.function  # type: ignore[attr-defined]
                impl.function = tagged

    def blame(self, exc: BaseException) -> PluginInfo | None:
        """The plugin whose module holds the innermost frame of ``exc``'s traceback (a
        component's code, called by the training loop rather than through a hook); None where no
        plugin's code is on it."""
        found = None
        tb = exc.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_globals.get("__name__", "")
            for info in self.infos.values():
                if info.name != CORE_PLUGIN and (module == info.module or module.startswith(info.module + ".")):
                    found = info
            tb = tb.tb_next
        return found

    def _raised_by(self, hook_name: str, exc: BaseException) -> str | None:
        """The plugin whose implementation of ``hook_name`` (plain or wrapper) was innermost on
        ``exc``'s traceback."""
        owners = {}
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            function = getattr(impl.function, "_aepipe_plugin_function", impl.function)  # not the tagging wrapper
            code = getattr(function, "__code__", None)
            if code is not None:
                owners[code] = impl.plugin_name
        found = None
        tb = exc.__traceback__
        while tb is not None:
            found = owners.get(tb.tb_frame.f_code, found)
            tb = tb.tb_next
        return found


#: the hooks that return metrics, and the prefix aepipe logs their names under
_METRIC_HOOKS = {"aepipe_epoch_end": "val_", "aepipe_run_end": "test_"}


def _slow_import_seconds() -> float:
    try:
        return float(os.environ.get(ENV_SLOW, SLOW_IMPORT_SECONDS))
    except ValueError:
        return SLOW_IMPORT_SECONDS


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
