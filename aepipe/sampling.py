"""The second stage: a sampler built for a model, to be fitted on its training codes.

A sampler named in the pipeline (``[model.sampler]``) is fitted when training ends and saved in
the model's own weights. ``aepipe fit-sampler RUN --sampler NAME`` fits one later and logs it to
the run as ``samplers/NAME/`` (:mod:`aepipe.runs` writes and reads it back).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aepipe.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.model import AutoEncoder

FOLDER = "samplers"


def build_sampler(model: AutoEncoder, name: str, settings: dict[str, Any] | None = None, pm: Any = None) -> Any:
    """Sampler ``name`` with ``settings`` (validated as its ``Config``), built for ``model``."""
    from aepipe.config.validation import validate
    from aepipe.plugins import get_plugin_manager

    pm = pm or get_plugin_manager()
    try:
        cls = pm.registry.get("sampler", name)
    except ConfigError as exc:
        raise ConfigError(f"--sampler: {exc}") from None
    config = validate(cls.Config, dict(settings or {}), "sampler", {"": "--set"}, f"sampler '{name}'")
    sampler = cls(config, model.spec)
    try:
        sampler.setup(model)
    except ConfigError as exc:
        raise ConfigError(f"sampler '{name}': {exc}") from None
    device = next(model.parameters()).device
    return sampler.to(device)
