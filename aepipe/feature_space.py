"""The base class of feature spaces: the kind of component that maps images (or any rows) to
the features generation metrics (FID, KID, precision, recall...) are computed in. A contract
module of its own beside :mod:`aepipe.components`, whose other bases are all parts of a model."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from aepipe.components import Component, ComponentConfig
from aepipe.datatypes import ModelSpec


class FeatureSpace(Component):
    """Images -> feature vectors, the space in which generation metrics (FID, KID,
    precision/recall, density/coverage) compare real and generated examples.

    Built as ``cls(config, spec)``, where ``spec`` is a :class:`ModelSpec` of the inputs it will
    see (``input_dim``, ``image_shape``, ``n_classes``; ``code_dim`` is 0); the constructor
    refuses inputs it cannot take (raise :class:`aepipe.errors.ConfigError`). Then
    :meth:`prepare` makes it ready for one dataset on one device (a space that learns, such as
    a classifier, trains on ``data.train`` here, or reloads what it trained from ``cache``), and
    :meth:`features` maps a batch of flat inputs in [0, 1] to ``(n, dim)`` features. Features
    must be deterministic and each row independent of the others in its batch.

    ``needs_data`` says whether :meth:`prepare` needs a dataset (``aepipe fid`` asks for
    ``--dataset`` where it does). Chosen by ``aepipe evaluate --features NAME`` and
    ``aepipe fid --features NAME``, not by a pipeline section.
    """

    kind = "feature"
    #: whether :meth:`prepare` learns from a dataset (``data`` may be None where it does not)
    needs_data: ClassVar[bool] = True

    def __init__(self, config: ComponentConfig, spec: ModelSpec):
        self.config = config
        self.spec = spec
        self.device = torch.device("cpu")

    @property
    def dim(self) -> int:  # pragma: no cover - abstract
        """The width of the features."""
        raise NotImplementedError

    def prepare(self, data: Any, device: torch.device | str, cache: Any = None) -> None:
        """Make the space ready for ``data`` (an :class:`aepipe.data.DataBundle`, or None where
        ``needs_data`` is False) on ``device``. ``cache`` is a folder (a ``Path``) where it may keep
        what it learned, keyed by the data; None: the local store's ``features/`` folder."""
        self.device = torch.device(device)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Features ``(n, dim)`` (float32, on the CPU) of inputs ``x``: ``(n, input_dim)`` in [0, 1],
        flattened as the model sees them (``spec.image_shape`` gives their image shape); any
        number of rows, batched inside."""
        raise NotImplementedError
