"""The plugin API: everything a plugin may import from aepipe, and the names aepipe keeps stable.

A plugin (first-party ones included) imports from this module, ``from aepipe.plugin import
Regularizer, ComponentConfig, require``, and from the package root only its user API (``resolve``,
``train``...); every other module of aepipe is internal and may change. ``tests/test_layers.py``
reads the imports of ``plugins/`` and ``examples/`` and fails on any other.

Names load on first use, so that a plugin's entry-point module can import ``hookimpl`` and
``Variant`` from here without importing torch (``aepipe --help`` loads every plugin). What each
name is: :data:`API`, by group; the plugin guide (``docs/plugins.md``) lists them.

Why a module of its own rather than the package root: the root is the user's API (train,
evaluate, sample...), this is the plugin author's contract; keeping them apart keeps each list
short and lets the contract grow helpers that users never need.
"""

from __future__ import annotations

from aepipe.lazy import facade

#: the plugin API by group: name -> "module" or "module:attr" where it is defined
API: dict[str, dict[str, str]] = {
    "hooks and variants": {
        "hookimpl": "aepipe.hookspecs",
        "Variant": "aepipe.variant",
        "RunContext": "aepipe.context",
    },
    "component bases": {
        "Component": "aepipe.components",
        "ComponentConfig": "aepipe.components",
        "ModelComponent": "aepipe.components",
        "Dataset": "aepipe.components",
        "Encoder": "aepipe.components",
        "Decoder": "aepipe.components",
        "Bottleneck": "aepipe.components",
        "Corruption": "aepipe.components",
        "Prior": "aepipe.components",
        "Regularizer": "aepipe.components",
        "Sampler": "aepipe.components",
        "FeatureSpace": "aepipe.feature_space",
    },
    "data types components exchange": {
        "ModelSpec": "aepipe.datatypes",
        "Encoding": "aepipe.datatypes",
        "Code": "aepipe.datatypes",
        "Group": "aepipe.datatypes",
        "Step": "aepipe.components",
        "RawData": "aepipe.datatypes",
        "Rows": "aepipe.datatypes",
        "Model": "aepipe.protocols",
        "Pipeline": "aepipe.protocols",
        "Data": "aepipe.protocols",
    },
    "errors": {
        "AepipeError": "aepipe.errors",
        "ConfigError": "aepipe.errors",
        "DataError": "aepipe.errors",
        "PluginError": "aepipe.errors",
        "require": "aepipe.components",
    },
    "network building blocks": {
        "ACTIVATIONS": "aepipe.components",
        "Activation": "aepipe.networks",
        "activation": "aepipe.components",
        "EncoderConfig": "aepipe.networks",
        "HeadEncoder": "aepipe.networks",
        "conv_sizes": "aepipe.networks",
    },
    "codes and batches": {
        "batches": "aepipe.data",
        "code_tensor": "aepipe.training.metrics",
        "code_statistics": "aepipe.stats",
        "importance_terms": "aepipe.evaluation.basic",
        "seeded_batches": "aepipe.evaluation.basic",
    },
    "distributions and divergences": {
        "DiagNormal": "aepipe.stats",
        "LOG_2PI": "aepipe.stats",
        "NEAR_ZERO": "aepipe.stats",
        "kl_analytic": "aepipe.stats",
        "kl_monte_carlo": "aepipe.stats",
        "importance_weighted_bound": "aepipe.stats",
        "log_mean_exp": "aepipe.stats",
        "mmd_rbf": "aepipe.stats",
    },
    "reading data safely": {
        "check_claim": "aepipe.arrays",
        "check_labels": "aepipe.arrays",
        "check_npz_member": "aepipe.arrays",
        "check_values": "aepipe.arrays",
        "finite_range": "aepipe.arrays",
        "load_npy": "aepipe.arrays",
        "memory_budget": "aepipe.limits",
        "size_text": "aepipe.files",
        "excerpt": "aepipe.secrets",
        "mask": "aepipe.secrets",
    },
    "devices and the store": {
        "one_cpu_thread": "aepipe.training.device",
        "local_root": "aepipe.tracking.store",
    },
    "testing": {
        "check_component": "aepipe.testing",
        "check_variant": "aepipe.testing",
        "registered_components": "aepipe.testing",
        "CheckSkipped": "aepipe.testing",
    },
}

#: what the names without a docstring of their own are (constants, pluggy's marker)
NOTES: dict[str, str] = {
    "hookimpl": "The marker of a hook implementation: decorate a plugin's functions named after the hooks.",
    "ACTIVATIONS": "The activation modules by name, as components' `activation` settings name them.",
    "Activation": "The `Literal` type of an activation setting (the names of `ACTIVATIONS`).",
    "LOG_2PI": "log(2 pi), for Gaussian log densities.",
    "local_root": "The local run store's folder, where a component may cache what it learns (under its own subfolder).",
    "NEAR_ZERO": "The threshold below which `code_statistics` counts a unit as near zero (0.05).",
}

NAMES: dict[str, str] = {name: target for group in API.values() for name, target in group.items()}
__all__ = sorted(NAMES)

__getattr__, _names = facade(__name__, NAMES)


def __dir__() -> list[str]:
    return sorted(set(_names()) | set(globals()))
