"""The one table of component kinds; every other view of them is derived from it.

Each kind has a registration hook (declared in :mod:`aepipe.hookspecs` from this table), a base
class (imported lazily: this module imports no torch), a place in a pipeline file and whether a
pipeline must name one. Adding a kind means adding a row here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """One component kind."""

    name: str  #: e.g. ``"encoder"``
    hook: str  #: its registration hook, e.g. ``"aepipe_register_encoders"``
    base: str  #: ``module:Class`` of the base class a registered component must derive from
    section: str | None  #: where a pipeline names it (``"model.encoder"``), None for variants and feature spaces
    required: bool = False  #: whether every pipeline must name one
    many: bool = False  #: several per pipeline, keyed (``[model.regularizers.<key>]``)
    instance: bool = False  #: registered as an instance (variants), not as a class
    summary: str = ""  #: one line for the registration hook's docstring
    returns: str = ""  #: what a registered class's ``forward``/``load`` gives

    def base_class(self) -> type:
        module, _, attr = self.base.partition(":")
        return getattr(importlib.import_module(module), attr)

    @property
    def model_section(self) -> str | None:
        """The key under ``[model]`` for a single model component (``encoder``), else None."""
        if self.section and self.section.startswith("model.") and not self.many:
            return self.section.split(".", 1)[1]
        return None


KINDS: tuple[Kind, ...] = (
    Kind("dataset", "aepipe_register_datasets", "aepipe.components:Dataset", "data", required=True,
         summary="Register dataset components.",
         returns="built as ``cls(config)``; ``load()`` returns :class:`aepipe.components.RawData`"),
    Kind("encoder", "aepipe_register_encoders", "aepipe.components:Encoder", "model.encoder", required=True,
         summary="Register encoder components.",
         returns="an ``nn.Module`` built as ``cls(config, spec)``, whose ``forward(x, y)`` returns an "
                 ":class:`aepipe.components.Encoding`"),
    Kind("bottleneck", "aepipe_register_bottlenecks", "aepipe.components:Bottleneck", "model.bottleneck",
         summary="Register bottleneck components (the encoder's features -> the code the decoder sees).",
         returns="an ``nn.Module`` built as ``cls(config, spec)``, whose ``forward(encoding, y_onehot, samples)`` "
                 "returns an :class:`aepipe.components.Code`; the classmethod ``features(config, spec)`` gives the "
                 "width of the encoder's output it takes"),
    Kind("decoder", "aepipe_register_decoders", "aepipe.components:Decoder", "model.decoder", required=True,
         summary="Register decoder components.",
         returns="an ``nn.Module`` built as ``cls(config, spec)``, whose ``forward(z, y)`` returns the likelihood's "
                 "parameters for every input dimension: logits for Bernoulli, means for Gaussian"),
    Kind("corruption", "aepipe_register_corruptions", "aepipe.components:Corruption", "model.corruption",
         summary="Register corruption components (x -> x~, applied in training only).",
         returns="an ``nn.Module`` built as ``cls(config, spec)``, whose ``forward(x)`` returns x~ of x's shape"),
    Kind("regularizer", "aepipe_register_regularizers", "aepipe.components:Regularizer", "model.regularizers",
         many=True, summary="Register regularizer components (penalties added to the loss).",
         returns="built as ``cls(config, spec)``; ``penalty(step)`` returns a scalar tensor; one that owns "
                 "parameters sets ``owns_parameters = True`` and takes its own optimisation step in ``update``"),
    Kind("prior", "aepipe_register_priors", "aepipe.components:Prior", "model.prior",
         summary="Register prior components p(z).",
         returns="built as ``cls(config, spec)``; ``sample`` always, ``log_prob`` where it is defined"),
    Kind("sampler", "aepipe_register_samplers", "aepipe.components:Sampler", "model.sampler",
         summary="Register samplers: a second stage fitted on the training codes after training.",
         returns="built as ``cls(config, spec)``; ``fit(model, split)`` fits it on the codes of the training split, "
                 "``sample(n, y)`` gives ``n`` decoder inputs; its state is buffers and parameters"),
    Kind("feature", "aepipe_register_feature_spaces", "aepipe.feature_space:FeatureSpace", None,
         summary="Register feature spaces (images -> feature vectors) that generation metrics (FID...) compare in; "
                 "chosen by ``aepipe evaluate --features`` and ``aepipe fid --features``, not by a pipeline section.",
         returns="built as ``cls(config, spec)``; ``prepare(data, device, cache)`` makes it ready for a dataset "
                 "(training what it learns from the training split), then ``features(x)`` gives ``(n, dim)`` features "
                 "of flat inputs in [0, 1]"),
    Kind("variant", "aepipe_register_variants", "aepipe.variant:Variant", None, instance=True,
         summary="Register variants: named compositions of components with default settings.",
         returns="an :class:`aepipe.Variant` instance; ``defaults`` is a partial pipeline (for example "
                 "``{\"model\": {\"encoder\": {\"name\": \"mlp\"}}}``) that a pipeline file naming the variant starts "
                 "from"),
)

BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
#: registration hook of each kind
HOOKS: dict[str, str] = {k.name: k.hook for k in KINDS}
#: component sections under ``[model]`` (one component each) and the kind each holds
MODEL_SECTIONS: dict[str, str] = {k.model_section: k.name for k in KINDS if k.model_section}
#: the key under ``[model]`` that holds several keyed components, and their kind
MANY_SECTIONS: dict[str, str] = {k.section.split(".", 1)[1]: k.name for k in KINDS if k.many and k.section}


def bases() -> dict[str, Any]:
    """Each kind's base class (imports :mod:`aepipe.components`, and so torch)."""
    return {k.name: k.base_class() for k in KINDS}
