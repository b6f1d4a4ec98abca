"""Resolving a pipeline from its layers: the variant's defaults, the file (or a tree), ``--set``
overrides and dotted ``values``, merged, then validated section by section into a
:class:`~aepipe.config.pipeline.Pipeline`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aepipe.config.pipeline import ComponentChoice, Pipeline
from aepipe.config.prescan import MAX_DEPTH
from aepipe.config.reading import parse_override, read_pipeline_layers, short
from aepipe.config.schema import (MODEL_COMPONENTS, REGULARIZER_CORE_KEYS, REGULARIZERS_SECTION, DataSettings,
                                  PipelineSettings)
from aepipe.config.tree import merge, origins_of, tree_depth, unflatten
from aepipe.config.validation import origin_for, validate
from aepipe.errors import ConfigError
from aepipe.kinds import BY_NAME

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.plugins import AepipePluginManager


def resolve(
    pm: AepipePluginManager,
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    tree: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    values_origin: str = "values",
    stored: bool = False,
    source: str | None = None,
) -> Pipeline:
    """Resolve a pipeline from a file (or a dict), ``--set`` overrides and then ``values`` (dotted
    keys to values, e.g. one tuning trial's parameters), validating everything.

    ``stored``: ``tree`` is a pipeline aepipe resolved and stored (a run's, a model's): every
    setting is in it, and its variant's defaults of today are not merged again (a variant that
    gained a component since must not change a stored model).

    ``source`` names ``tree`` in errors (a file names itself)."""
    source = str(path) if path is not None else source or "<pipeline>"
    files, upper = _read_layers(path, tree, overrides, values, values_origin, source)
    registry = pm.registry  # after the bounded reading: building it imports the plugins (and torch)
    merged, origins = _merge_layers(registry, files, upper, source, stored)
    data_section, model_section = _section(merged, "data", origins), _section(merged, "model", origins)
    settings = _core_settings(merged, data_section, model_section, origins)
    dataset_settings = {k: v for k, v in data_section.items() if k not in DataSettings.model_fields}
    dataset = _choose(registry, "dataset", settings.data.name, dataset_settings, "data", origins)
    shared = dict(settings.model.shared or {})
    components = _model_components(registry, model_section, source, origins, shared)
    regularizers = _regularizers(registry, model_section, origins, shared)
    _check_shared(shared, [*components.values(), *regularizers.values()], origins)
    if not stored:  # [evaluate] runs when training ends: an unknown name fails now, not after the training
        _check_evaluate_names(registry, settings, origins)
    return Pipeline(settings, dataset, components, regularizers, source=source, origins=origins)


def _read_layers(path: str | Path | None, tree: dict[str, Any] | None, overrides: list[str] | tuple[str, ...],
                 values: dict[str, Any] | None, values_origin: str, source: str
                 ) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """The file's layers (it and the files it extends, read within the bounds of a pipeline file;
    or ``tree`` checked for depth) and the layers above them, each with where it came from:
    ``--set`` overrides, then ``values``."""
    if path is None and tree and tree_depth(tree) > MAX_DEPTH:
        raise ConfigError(f"{source}: nested {tree_depth(tree)} levels deep; aepipe reads at most {MAX_DEPTH}")
    for key in values or {}:
        if key.count(".") >= MAX_DEPTH:
            raise ConfigError(f"{values_origin} {short(key)}: a key of {key.count('.') + 1} parts; "
                              f"aepipe reads at most {MAX_DEPTH} levels")
    files = read_pipeline_layers(path) if path is not None else [(source, copy.deepcopy(tree or {}))]
    upper = [(f"--set {text}", parse_override(text)) for text in overrides]
    upper += [(f"{values_origin} {key}", unflatten({key: value})) for key, value in (values or {}).items()]
    return files, upper


def _merge_layers(registry: Any, files: list[tuple[str, dict[str, Any]]], upper: list[tuple[str, dict[str, Any]]],
                  source: str, stored: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The layers merged over the variant's defaults (none for a ``stored`` pipeline), and where
    each dotted key was set."""
    origins: dict[str, str] = {"": source}
    variant_name = None
    for _, st in [*files, *upper]:
        variant_name = st.get("variant", variant_name)
    merged: dict[str, Any] = {}
    if variant_name is not None and not stored:
        merged = _variant_defaults(registry, variant_name, source)
        # a bad default is the registering plugin's, not the one that owns the component
        plugin = registry.source("variant", variant_name).describe()
        origins.update(origins_of(merged, f"variant '{variant_name}' of {plugin}"))
    for label, st in [*files, *upper]:
        origins.update(origins_of(st, label))
        merged = merge(merged, st)
    return merged, origins


def _variant_defaults(registry: Any, variant_name: Any, source: str) -> dict[str, Any]:
    if not isinstance(variant_name, str):
        raise ConfigError(f"{source}: 'variant' must be a string, got {variant_name!r}")
    try:
        variant = registry.get("variant", variant_name)
    except ConfigError as exc:
        raise ConfigError(f"{source}: variant: {exc}") from None
    return copy.deepcopy(variant.defaults)


def _section(merged: dict[str, Any], name: str, origins: dict[str, str]) -> dict[str, Any]:
    section = merged.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{origin_for(name, origins)}: '{name}' must be a table")
    return section


def _core_settings(merged: dict[str, Any], data_section: dict[str, Any], model_section: dict[str, Any],
                   origins: dict[str, str]) -> PipelineSettings:
    """The core sections validated, the component sections split off (the dataset's own settings
    beside ``[data]``'s, the component tables of ``[model]``)."""
    core = dict(merged)
    core["data"] = {k: v for k, v in data_section.items() if k in DataSettings.model_fields}
    core["model"] = {k: v for k, v in model_section.items() if k not in MODEL_COMPONENTS and k != REGULARIZERS_SECTION}
    return validate(PipelineSettings, core, "", origins, "the pipeline")


def _model_components(registry: Any, model_section: dict[str, Any], source: str, origins: dict[str, str],
                      shared: dict[str, Any] | None = None) -> dict[str, ComponentChoice]:
    """The component of each ``[model.<section>]``; a required kind left out is an error listing
    what is registered."""
    components: dict[str, ComponentChoice] = {}
    for section, kind in MODEL_COMPONENTS.items():
        sub = model_section.get(section)
        if sub is None:
            if BY_NAME[kind].required:
                raise ConfigError(
                    f"{source}: no {kind} chosen; set [model.{section}] name = ... "
                    f"(available: {', '.join(registry.names(kind))}) or a variant"
                )
            continue
        path_ = f"model.{section}"
        if not isinstance(sub, dict) or "name" not in sub:
            raise ConfigError(f"{origin_for(path_, origins)}: [{path_}] needs a 'name'")
        warmup = _warmup(sub, path_, origins) if kind == "bottleneck" else 0  # its losses warm up as a regularizer does
        settings = {k: v for k, v in sub.items() if k != "name" and not (warmup and k == "warmup_epochs")}
        components[section] = _choose(registry, kind, sub["name"], settings, path_, origins, shared)
        components[section].warmup_epochs = warmup
    return components


def _warmup(sub: dict[str, Any], path_: str, origins: dict[str, str]) -> int:
    """A section's ``warmup_epochs``: a whole number of epochs >= 0 (0 where it is not set)."""
    warmup = sub.get("warmup_epochs", 0)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ConfigError(f"{origin_for(path_ + '.warmup_epochs', origins)}: '{path_}.warmup_epochs' = {warmup!r}: "
                          "expected a whole number of epochs >= 0")
    return warmup


def _regularizers(registry: Any, model_section: dict[str, Any], origins: dict[str, str],
                  shared: dict[str, Any] | None = None) -> dict[str, ComponentChoice]:
    """The enabled ``[model.regularizers.<key>]`` tables, each with its warm-up."""
    regularizers: dict[str, ComponentChoice] = {}
    regs = model_section.get(REGULARIZERS_SECTION, {})
    if not isinstance(regs, dict):
        where = origin_for("model.regularizers", origins)
        raise ConfigError(f"{where}: [model.regularizers] must be a table of tables")
    for key, sub in regs.items():
        path_ = f"model.{REGULARIZERS_SECTION}.{key}"
        if not isinstance(sub, dict):
            raise ConfigError(f"{origin_for(path_, origins)}: [{path_}] must be a table")
        enabled = sub.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{origin_for(path_ + '.enabled', origins)}: '{path_}.enabled' must be true or false")
        if not enabled:
            continue
        warmup = _warmup(sub, path_, origins)
        name = sub.get("name", key)
        settings_ = {k: v for k, v in sub.items() if k not in REGULARIZER_CORE_KEYS}
        regularizers[key] = _choose(registry, "regularizer", name, settings_, path_, origins, shared)
        regularizers[key].warmup_epochs = warmup
    return regularizers


def _check_evaluate_names(registry: Any, settings: PipelineSettings, origins: dict[str, str]) -> None:
    """Every feature space and sampler ``[evaluate]`` names is registered."""
    for kind, field_ in (("feature", "features"), ("sampler", "samplers")):
        for name in getattr(settings.evaluate, field_):
            try:
                registry.get(kind, name)
            except ConfigError as exc:
                raise ConfigError(f"{origin_for(f'evaluate.{field_}', origins)}: evaluate.{field_}: {exc}") from None


def _check_shared(shared: dict[str, Any], choices: list[ComponentChoice], origins: dict[str, str]) -> None:
    """Every ``model.shared`` key is a setting of some component of the model."""
    for key in shared:
        if not any(key in type(choice.config).model_fields for choice in choices):
            raise ConfigError(f"{origin_for(f'model.shared.{key}', origins)}: model.shared.{key}: no component of this "
                              "model has a setting of that name")


def _choose(registry: Any, kind: str, name: Any, settings: dict[str, Any], path: str, origins: dict[str, str],
            shared: dict[str, Any] | None = None) -> ComponentChoice:
    name_key = f"{path}.name"
    if not isinstance(name, str):
        raise ConfigError(f"{origin_for(name_key, origins)}: '{name_key}' must be a string, got {name!r}")
    try:
        cls = registry.get(kind, name)
    except ConfigError as exc:
        raise ConfigError(f"{origin_for(name_key, origins)}: {name_key}: {exc}") from None
    if path == "data":
        core_keys = tuple(DataSettings.model_fields)
    else:
        core_keys = ("name",) if kind != "regularizer" else tuple(REGULARIZER_CORE_KEYS)
    if shared:  # the model's shared settings, under the component's own
        settings = {**{k: v for k, v in shared.items() if k in cls.Config.model_fields}, **settings}
    config = validate(cls.Config, settings, path, origins, f"{kind} '{name}'", core_keys)
    return ComponentChoice(kind, name, cls, config, path)
