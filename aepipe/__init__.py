"""aepipe: a plugin-based experiment pipeline for autoencoders.

Plugin authors need only::

    from aepipe import hookimpl

The rest of the public API is imported lazily, so ``import aepipe`` stays light.
"""

from __future__ import annotations

from aepipe.hookspecs import hookimpl
from aepipe.lazy import facade
from aepipe.version import __version__

__all__ = [
    "__version__",
    "hookimpl",
    "Variant",
    "get_plugin_manager",
    "resolve",
    "train",
    "evaluate",
    "evaluation_settings",
    "compare_image_sets",
    "build_report",
    "run_zoo",
    "run_study",
    "study_summary",
    "encode",
    "reconstruct",
    "sample",
    "fit_sampler",
    "fid",
    "check_plugins",
    "load_model",
    "AepipeError",
    "ConfigError",
    "PluginError",
    "TrainingError",
    "DataError",
]

_LAZY = {
    "Variant": ("aepipe.variant", "Variant"),
    "get_plugin_manager": ("aepipe.plugins", "get_plugin_manager"),
    "resolve": ("aepipe.config", "resolve"),
    "train": ("aepipe.usecases.train", "train_pipeline"),
    "evaluate": ("aepipe.evaluation.run", "evaluate"),
    "evaluation_settings": ("aepipe.evaluation.run", "settings"),
    "compare_image_sets": ("aepipe.usecases.fid", "compare_image_sets"),
    "build_report": ("aepipe.evaluation.report", "build_report"),
    "run_zoo": ("aepipe.zoo", "run_zoo"),
    "run_study": ("aepipe.usecases.tune", "tune"),
    "study_summary": ("aepipe.usecases.tune", "summary"),
    "encode": ("aepipe.usecases.arrays", "encode"),
    "reconstruct": ("aepipe.usecases.arrays", "reconstruct"),
    "sample": ("aepipe.usecases.arrays", "sample"),
    "fit_sampler": ("aepipe.usecases.arrays", "fit_sampler"),
    "fid": ("aepipe.usecases.fid", "fid"),
    "check_plugins": ("aepipe.usecases.plugins", "check"),
    "load_model": ("aepipe.runs", "load_model"),
    "AepipeError": ("aepipe.errors", "AepipeError"),
    "ConfigError": ("aepipe.errors", "ConfigError"),
    "PluginError": ("aepipe.errors", "PluginError"),
    "TrainingError": ("aepipe.errors", "TrainingError"),
    "DataError": ("aepipe.errors", "DataError"),
}


__getattr__, _names = facade(__name__, {name: f"{module}:{attr}" for name, (module, attr) in _LAZY.items()})


def __dir__() -> list[str]:
    return sorted(set(_names()) | set(globals()))
