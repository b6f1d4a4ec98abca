"""The data types components exchange: what a model part knows of its inputs
(:class:`ModelSpec`), what an encoder and a bottleneck return (:class:`Encoding`, :class:`Code`),
and what a dataset returns (:class:`RawData`, with :class:`Rows` read on demand). One forward pass
as regularizers see it, :class:`aepipe.components.Step`, names the model and lives with the bases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class ModelSpec:
    """What a model component needs to know about its inputs and code."""

    input_dim: int
    code_dim: int
    image_shape: tuple[int, ...] | None = None  # (channels, height, width)
    n_classes: int = 0
    conditional: bool = False
    #: examples in the training split (0 where the model is built without its data, e.g. to load
    #: saved weights): estimators that need the dataset size N read it here
    train_size: int = 0

    @property
    def cond_dim(self) -> int:
        """Width of the one-hot label appended to inputs of conditional models."""
        return self.n_classes if self.conditional else 0


@dataclass
class Encoding:
    """What an encoder returns: its output features, which the run's bottleneck turns into
    the code the decoder sees.

    ``code`` has the width the bottleneck asks for (``spec.code_dim`` unless the bottleneck's
    :meth:`Bottleneck.features` says otherwise: the ``gaussian`` bottleneck asks for
    ``2 * code_dim``, a mean and a log-variance). An encoder may instead give a posterior of its
    own in ``dist`` (q(z | x), batch shape ``(n,)``, event shape ``(code_dim,)``, ``code`` its
    mean): the ``distribution = "gaussian"`` setting of the first-party encoders, kept for
    pipelines and runs written before bottlenecks existed.
    """

    code: torch.Tensor
    dist: torch.distributions.Distribution | None = None

    @property
    def stochastic(self) -> bool:
        return self.dist is not None


@dataclass
class Code:
    """What a bottleneck returns for a batch of n inputs, everything in one value.

    - ``code``: the deterministic code, shape ``(n, code_dim)`` (a posterior's mean, the
      nearest codeword, the most likely category): what ``aepipe encode`` writes by default.
    - ``z``: what the decoder sees in training, shape ``(samples * n, code_dim)`` (sample-major:
      rows ``l * n .. (l + 1) * n`` are the l-th draw); ``code`` itself for a deterministic code.
    - ``samples``: L, the draws per input in ``z``.
    - ``dist``: q(z | x) where the code is stochastic and has a density: anything with
      ``rsample``/``sample``/``log_prob`` (a :class:`aepipe.stats.DiagNormal`, a
      ``torch.distributions`` object); ``None`` for a deterministic code.
    - ``log_q``: log q(z | x) of each row of ``z``, shape ``(samples, n)``, where the bottleneck
      knows it better than ``dist`` does (a flow: the base density less the log-determinants).
    - ``losses``: the bottleneck's own loss terms by name, scalars already weighted; aepipe adds
      them to the loss and logs each as ``penalty.<name>`` (``val_penalty.<name>``...).
    - ``outputs``: what ``aepipe encode --what`` may ask for besides ``code``: ``mean``,
      ``sample``, ``indices``..., each ``(n, ...)``.
    """

    code: torch.Tensor
    z: torch.Tensor
    samples: int = 1
    dist: Any = None
    log_q: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def stochastic(self) -> bool:
        return self.dist is not None or self.log_q is not None

    def log_q_of_z(self) -> torch.Tensor:
        """log q(z | x) of every draw in ``z``, shape ``(samples, n)``."""
        if self.log_q is not None:
            return self.log_q
        if self.dist is None:
            raise ValueError("a deterministic code has no density")
        n = self.code.shape[0]
        return self.dist.log_prob(self.z.reshape(self.samples, n, -1))


class Rows:
    """Inputs a dataset reads on demand instead of holding them (files on disk, a Hugging Face
    table): ``shape`` ``(n, ...)`` and ``dtype`` as a numpy array's, and :meth:`read`, the rows
    at some indices as one array. aepipe reads them in batches, from DataLoader worker
    processes when it streams (``data.in_memory``), so a ``Rows`` must survive a fork and hold
    no open handle it cannot share. A numpy array or ``np.load(..., mmap_mode="r")`` serves too.
    """

    shape: tuple[int, ...] = (0,)
    dtype: np.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The rows at ``indices`` (int64, any order, maybe repeated), shape ``(len(indices), *shape[1:])``."""
        raise NotImplementedError

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.read(np.array([index], dtype=np.int64))[0]
        return self.read(np.arange(len(self), dtype=np.int64)[index])


@dataclass
class RawData:
    """What a dataset returns: raw inputs (any shape ``(n, ...)``) and labels.

    ``x`` is a numpy array (memory-mapped or not) or :class:`Rows` read on demand. ``value_range``
    (low, high) maps raw values to [0, 1]; the same map is applied to the inputs of
    ``aepipe encode``. uint8 inputs stay uint8 in memory and are scaled batch by batch.
    ``x_test``/``y_test``, when given, are the dataset's own test split; otherwise aepipe
    splits one off.

    ``factors``: ground-truth factors of variation where the dataset knows them (``shapes``),
    integer indices ``(n, K)``, one column per factor, named by ``factor_names``;
    ``factors_test`` the same for ``x_test``. Each split exposes its rows' factors as
    ``split.factors`` (the disentanglement metrics read them); ``None`` where there are none.

    ``clip``: whether scaled values are clipped to [0, 1] (the default). False for signed,
    unbounded features (a network's activations), where ``value_range`` only shifts and scales:
    ``(0, s)`` divides by ``s``; the model's files record it, so ``encode`` does the same.
    """

    x: np.ndarray | Rows
    y: np.ndarray | None
    value_range: tuple[float, float]
    image_shape: tuple[int, ...] | None = None
    n_classes: int = 0
    x_test: np.ndarray | Rows | None = None
    y_test: np.ndarray | None = None
    source: str = ""
    factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()
    factors_test: np.ndarray | None = None
    clip: bool = True
