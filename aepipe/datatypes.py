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
    #: the code's latent groups, ``(name, width)`` in the order they are generated (the top of a
    #: hierarchy first), declared by the bottleneck (:meth:`Bottleneck.groups`); their widths sum
    #: to ``code_dim``. Empty for a code of one group (every model but hierarchical ones)
    groups: tuple[tuple[str, int], ...] = ()

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named latents of joint codes ``z`` ``(m, code_dim)``: a view of each group's
        columns by name, in the order of :attr:`groups` (``{"z": z}`` for a code of one group)."""
        if not self.groups:
            return {"z": z}
        names = [name for name, _ in self.groups]
        return dict(zip(names, torch.split(z, [width for _, width in self.groups], dim=-1)))

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
    #: intermediate features an encoder exposes to the bottleneck by name (a ladder's or a
    #: hierarchy's bottom-up features at each depth, ``(n, width)`` each); None where it exposes none
    features: dict[str, torch.Tensor] | None = None

    @property
    def stochastic(self) -> bool:
        return self.dist is not None


@dataclass
class Group:
    """One named latent group of a :class:`Code` (a level of a hierarchy).

    - ``z``: its draws, ``(samples * n, width)``, sample-major as :attr:`Code.z`;
    - ``code``: its deterministic code ``(n, width)`` (the posterior's mean);
    - ``log_q``: log q(z_g | x, parents) of each draw, ``(samples, n)``;
    - ``log_p``: its prior term log p(z_g | parents) of each draw, ``(samples, n)``: a prior may
      condition one group on others (``given`` names them);
    - ``kl``: KL(q(z_g | x, parents) || p(z_g | parents)) in closed form given the parents'
      draws, ``(samples, n)``, where both are known in closed form; else the Monte Carlo
      estimate ``log_q - log_p`` stands for it.
    """

    z: torch.Tensor
    code: torch.Tensor
    log_q: torch.Tensor | None = None
    log_p: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    given: tuple[str, ...] = ()

    def kl_per_example(self) -> torch.Tensor:
        """This group's KL per example, ``(n,)``: the mean over the draws of the closed form,
        else of log q - log p."""
        if self.kl is not None:
            return self.kl.reshape(-1, self.code.shape[0]).mean(0)
        if self.log_q is None or self.log_p is None:
            raise ValueError("a group needs its kl, or its log_q and log_p")
        return (self.log_q - self.log_p).mean(0)


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
    - ``groups``: a code of several latent groups (a hierarchy) gives each by name, in the
      order of ``spec.groups`` (:class:`Group`: its draws, posterior, prior term and KL); ``z``
      and ``code`` are then the groups' joint vectors (concatenated in that order), ``log_q``
      the joint log q(z | x) (the sum of the groups') and ``log_p`` the joint log p(z) (the sum
      of their prior terms). None for a code of one group.
    - ``log_p``: log p(z) of each row of ``z``, ``(samples, n)``, where the bottleneck computes
      the prior terms itself (a hierarchy's conditional priors); None: the model's prior gives it.
    - ``diagnostics``: unweighted statistics of the batch by name (0-d tensors, not part of the
      loss), averaged over each epoch and logged as ``diag.<name>`` (``val_diag.<name>`` on
      validation data); None where there are none.
    """

    code: torch.Tensor
    z: torch.Tensor
    samples: int = 1
    dist: Any = None
    log_q: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    groups: dict[str, Group] | None = None
    log_p: torch.Tensor | None = None
    diagnostics: dict[str, torch.Tensor] | None = None

    @property
    def stochastic(self) -> bool:
        return self.dist is not None or self.log_q is not None or self.groups is not None

    def group_kls(self) -> dict[str, torch.Tensor]:
        """Each group's KL per example ``(n,)`` by name (empty for a code of one group); their
        sum is the joint KL(q(z | x) || p(z)) of a hierarchy (the chain rule of the KL)."""
        return {name: group.kl_per_example() for name, group in (self.groups or {}).items()}

    def log_q_of_z(self) -> torch.Tensor:
        """log q(z | x) of every draw in ``z``, shape ``(samples, n)``."""
        if self.log_q is not None:
            return self.log_q
        if self.groups:
            return torch.stack([group.log_q for group in self.groups.values()]).sum(0)
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
