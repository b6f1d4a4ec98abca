"""The base of every settings model (core sections, component configs, ``[tune]``): unknown keys
are errors, values are never coerced from another type (``"3"`` is not an integer, ``3.0`` is
not one either; an integer is a valid float), and no integer is too large for 64 bits. A TOML
array is accepted where a tuple is declared. Light: imports pydantic only."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

INT64 = (-(2**63), 2**63 - 1)


def out_of_int64(value: Any) -> int | None:
    """The first integer in ``value`` (nested lists, tuples and dicts too) that a 64-bit integer
    cannot hold, or None: torch and numpy would overflow on it. Iterative, however deep."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not INT64[0] <= item <= INT64[1]:
                return item
        elif isinstance(item, (list, tuple, dict)):
            stack.extend(reversed(list(item.values() if isinstance(item, dict) else item)))
    return None


def _is_tuple(annotation: Any) -> bool:
    """``tuple[...]``, or an optional or union that includes one."""
    origin = typing.get_origin(annotation)
    if origin is tuple or annotation is tuple:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple(arg) for arg in typing.get_args(annotation))
    return False


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _arrays_as_tuples(cls, data: Any) -> Any:
        """TOML has arrays, not tuples: a list given for a tuple field is taken as one."""
        if isinstance(data, dict):
            fields = cls.model_fields
            data = {k: tuple(v) if isinstance(v, list) and k in fields and _is_tuple(fields[k].annotation) else v
                    for k, v in data.items()}
        return data

    @field_validator("*", mode="after")
    @classmethod
    def _fits_int64(cls, value: Any) -> Any:
        if (bad := out_of_int64(value)) is not None:
            raise ValueError(f"{bad} does not fit a 64-bit integer")
        return value
