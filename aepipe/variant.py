"""Variants: named compositions of components (light: imports no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Variant:
    """A named composition of components: a partial pipeline configuration.

    ``defaults`` is a nested dict shaped like a pipeline file, e.g.
    ``{"model": {"encoder": {"name": "mlp"}, "regularizers": {"kl": {"beta": 1.0}}}}``.
    """

    name: str
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
