"""Package facades whose names load on first use (PEP 562), so that importing a package, or any
module inside it, does not import everything the package offers: ``aepipe.training.train`` is
there when asked for, but ``import aepipe.training.device`` does not load the training loop."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def facade(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose attribute ``name`` is ``names[name]``:
    ``"module"`` (that module's attribute of the same name) or ``"module:attr"``."""

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr or name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
