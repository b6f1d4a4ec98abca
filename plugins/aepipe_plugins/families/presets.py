"""Preset helpers: the compositions the families' presets (variants) start from, written once.

A preset is a :class:`aepipe.plugin.Variant` whose ``defaults`` are a partial pipeline. Most of
aepipe's variants are one of two models with a part changed: the MLP autoencoder
(:func:`autoencoder`) or the standard VAE (:func:`standard_vae`: that autoencoder with a
Gaussian bottleneck, the standard-normal prior and the KL at beta 1).
"""

from __future__ import annotations

import copy
from typing import Any

#: the MLP encoder and decoder most presets use (256-128 wide, mirrored)
MLP = {"encoder": {"name": "mlp", "hidden": [256, 128]}, "decoder": {"name": "mlp", "hidden": [128, 256]}}
#: the one-layer sigmoid encoder and decoder of the notes' autoencoder
ONE_LAYER = {"encoder": {"name": "one-layer", "activation": "sigmoid"}, "decoder": {"name": "one-layer"}}
#: the standard VAE's parts besides its networks
GAUSSIAN, STANDARD_NORMAL, KL = {"name": "gaussian"}, {"name": "standard-normal"}, {"kl": {"beta": 1.0}}


def autoencoder(networks: dict[str, Any] | None = None, **model: Any) -> dict[str, Any]:
    """``{"model": ...}``: ``networks`` (default :data:`MLP`) with a Bernoulli likelihood, and
    ``model``'s sections over them (a ``None`` value leaves the section out)."""
    tree = {**copy.deepcopy(networks if networks is not None else MLP), "likelihood": "bernoulli"}
    for key, value in model.items():
        if value is not None:
            tree[key] = copy.deepcopy(value)
    return {"model": tree}


def standard_vae(**model: Any) -> dict[str, Any]:
    """The standard VAE: the MLP encoder and decoder, a Gaussian bottleneck, the standard-normal
    prior, a Bernoulli likelihood and the KL at beta 1 (``regularizers``); ``model``'s sections
    replace any of them (``prior=None`` leaves the prior out)."""
    parts = {"bottleneck": GAUSSIAN, "prior": STANDARD_NORMAL, "regularizers": KL}
    return autoencoder(**{**parts, **model})
