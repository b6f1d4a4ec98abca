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

#: what a code can be (a bottleneck's ``support``) and what a prior or sampler draws (its
#: ``draws``), by name; ``code`` (draws only): the bottleneck's own codes, through its
#: ``from_indices`` or fitted on them, which fit whatever the code is
SUPPORTS: dict[str, str] = {
    "real": "real vectors",
    "one-hot": "one-hot groups",
    "codewords": "codebook vectors",
    "grid": "points of a finite grid of levels",
    "sphere": "unit vectors",
    "non-negative": "non-negative (sparse) vectors",
    "real+one-hot": "real vectors beside one-hot groups",
    "code": "the bottleneck's own codes",
}


def code_support(model: AutoEncoder) -> str:
    """What ``model``'s decoder inputs are: its bottleneck's ``support`` (``real`` without one)."""
    return getattr(model.bottleneck, "support", "real") if model.bottleneck is not None else "real"


def check_support(model: AutoEncoder, sampler: Any = None) -> None:
    """Refuse (:class:`ConfigError`, one line) drawing ``model``'s codes through ``sampler`` (default:
    the model's sampler, else its prior, else N(0, I)) where its draws do not fit the code: draws
    fit a code that is ``real``, one of their own support, and any code where they are ``code``."""
    drawer = sampler if sampler is not None else model.sampler if model.sampler is not None else model.prior
    drawn = getattr(drawer, "draws", "real") if drawer is not None else "real"
    code = code_support(model)
    if drawn in ("code", code) or code == "real":
        return
    who = f"{drawer.kind} '{drawer.name}'" if drawer is not None else "N(0, I) (the model has no prior)"
    bottleneck = model.bottleneck.name
    raise ConfigError(f"{who} draws {SUPPORTS.get(drawn, drawn)}, but bottleneck '{bottleneck}' gives "
                      f"{SUPPORTS.get(code, code)}: "
                      f"its draws would not be codes; draw through a prior or sampler of the code's own kind "
                      f"(one that draws '{code}' or 'code', e.g. fitted on its indices)")


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
