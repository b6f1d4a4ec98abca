"""Validating a section against its pydantic model, its first error turned into one line: where
the key was set (a file, ``--set``, a variant), the dotted key, and what was expected (or the
valid keys, for an unknown one)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from aepipe.errors import ConfigError


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a table"
    name = getattr(annotation, "__name__", None)
    return name if name and not str(annotation).startswith("typing.") else str(annotation).replace("typing.", "")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``Optional[Model]`` too), else None."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _format_error(
    exc: ValidationError, model: type[BaseModel], section: str, origins: dict[str, str], label: str,
    extra_keys: tuple[str, ...] = ()
) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    # Walk to the model that owns the failing field, to list its valid keys.
    owner: type[BaseModel] = model
    for part in loc[:-1]:
        field_info = owner.model_fields.get(part)
        sub = _model_of(field_info.annotation) if field_info else None
        if sub is not None:
            owner = sub
        else:
            break
    key = ".".join(([section] if section else []) + loc)
    where = origin_for(key, origins)
    if err["type"] == "extra_forbidden":
        valid = ", ".join(sorted(set(owner.model_fields) | (set(extra_keys) if owner is model else set()))) or "(none)"
        return ConfigError(f"{where}: unknown key '{key}' for {label}; valid keys: {valid}")
    if err["type"] == "missing":
        return ConfigError(f"{where}: missing required key '{key}' for {label}")
    field_info = owner.model_fields.get(loc[-1]) if loc else None
    message = err["msg"].removeprefix("Value error, ")  # a validator's own words, as written
    # a table's own check
    if field_info is not None and _model_of(field_info.annotation) is not None and err["type"] == "value_error":
        return ConfigError(f"{where}: [{key}]: {message}")
    expected = f"expected {_type_name(field_info.annotation)}: " if field_info is not None else ""
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 80 else f"{shown[:60]}... ({len(shown)} characters)"
    return ConfigError(f"{where}: '{key}' = {shown}: {expected}{message}")


def origin_for(key: str, origins: dict[str, str]) -> str:
    parts = key.split(".")
    while parts:
        found = origins.get(".".join(parts))
        if found:
            return found
        parts.pop()
    return origins.get("", "<pipeline>")


def validate(
    model: type[BaseModel], data: Any, section: str, origins: dict[str, str], label: str,
    extra_keys: tuple[str, ...] = ()
) -> Any:
    if not isinstance(data, dict):
        where = origin_for(section, origins)
        raise ConfigError(f"{where}: '{section}' must be a table, got {data!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _format_error(exc, model, section, origins, label, extra_keys) from None
