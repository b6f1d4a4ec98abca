"""Disentanglement metrics on datasets with ground-truth factors (``shapes``), with the
conventions of disentanglement_lib (Locatello et al. 2019) unless a line below says otherwise.

Inputs everywhere: ``codes``, a float numpy array ``(N, Z)`` of deterministic codes (the
posterior mean, as disentanglement_lib's ``mean`` representation), and ``factors``, an integer
numpy array ``(N, K)`` of factor indices. Factors that take a single value in the data carry no
information and are left out (disentanglement_lib would divide by their zero entropy).

* :func:`mig`, the mutual information gap (Chen et al. 2018): each code dimension discretised
  into 20 equal-width bins over its range (``np.histogram`` edges, ``np.digitize``); the mutual
  information of each (code, factor) pair by ``sklearn.metrics.mutual_info_score`` (nats); per
  factor, the gap between the two most informative codes divided by the factor's entropy;
  averaged over factors. 1 when each factor is copied into one code and the others say nothing.
* :func:`dci`, disentanglement, completeness and informativeness (Eastwood & Williams 2018): an
  importance matrix ``R[code, factor]`` from one classifier per factor; disentanglement is
  ``1 - H_K(R[i, :])`` per code weighted by the code's share of the importance, completeness
  ``1 - H_Z(R[:, j])`` per factor weighted likewise (entropies in base K and Z, ``+1e-11`` as
  disentanglement_lib); informativeness the classifiers' mean accuracy on held-out points.
  The classifier is disentanglement_lib's: scikit-learn's ``GradientBoostingClassifier`` with
  its defaults (100 rounds of depth-3 regression trees, one per class per round), its
  impurity-based ``feature_importances_`` read as ``R``. It costs about 10 ms a tree on this
  machine, so it fits on a seeded subset of at most :data:`DCI_TRAIN` points (disentanglement_lib
  fits on 10,000; ``max_train=None`` fits on all): on ``shapes`` (38 factor values) about a
  minute per model. Codes that copy the factors score 1, 1, 1.
* :func:`sap`, the separated attribute predictability (Kumar et al. 2018): for each (code,
  factor) pair a linear classifier on that one code, ``LinearSVC(C=0.01, class_weight="balanced")``
  (disentanglement_lib's discrete-factor setting), scored by held-out accuracy; per factor the
  difference between the two best codes, averaged over factors. A linear one-vs-rest classifier
  on one number separates only the extreme values of a factor with many values, so even codes
  that copy the factors score about 0.3 (as in disentanglement_lib); ``classifier="threshold"``
  fits a classifier of thresholds on the code instead (a decision tree with as many leaves as
  the factor has values), under which such codes score close to ``1 - 1/values``.
* :func:`factorvae_score` (Kim & Mnih 2018): codes divided by their global standard deviation,
  dimensions with a standard deviation under 0.05 pruned; each vote fixes one factor (chosen
  uniformly) at the value of a random point and draws a batch of 64 points sharing that value,
  votes for (factor, the code dimension of least normalised variance); a majority-vote
  classifier maps each code dimension to a factor; the score is its accuracy on fresh votes
  (10,000 to fit, 5,000 to score). disentanglement_lib draws each batch from the generative
  process; aepipe draws it (with replacement) from the points given, grouped by the fixed
  factor's value.

:func:`disentanglement_metrics` computes all of them for a model and a :class:`DataBundle`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.data import DataBundle, Split
    from aepipe.model import AutoEncoder

#: bins of the histogram that discretises each code dimension (disentanglement_lib's default)
BINS = 20
#: code dimensions with a smaller standard deviation are pruned by the FactorVAE score
PRUNE_STD = 0.05
#: points of each split the metrics read (a seeded subset where the split is larger)
MAX_TRAIN = 5_000
MAX_TEST = 2_000
#: points DCI's boosted trees fit on (a seeded subset of the training points given): their cost
#: grows with the points and with the number of factor values
DCI_TRAIN = 1_000

Pair = tuple[np.ndarray, np.ndarray]


def _check(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``codes`` as float64 ``(N, Z)`` and ``factors`` as int64 ``(N, K)``, the factors that take one
    value only left out; a ValueError naming the mismatch otherwise."""
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    codes = codes[:, None] if codes.ndim == 1 else codes
    factors = factors[:, None] if factors.ndim == 1 else factors
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"codes {codes.shape} and factors {factors.shape} must be (N, Z) and (N, K) with the same N")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be integer indices, not {factors.dtype}")
    if not np.isfinite(codes).all():
        raise ValueError("codes hold NaN or an infinity")
    return codes, factors.astype(np.int64)


def _varying(*factor_sets: np.ndarray) -> np.ndarray:
    """The columns that take more than one value in the first set of factors."""
    first = factor_sets[0]
    return np.array([j for j in range(first.shape[1]) if len(np.unique(first[:, j])) > 1], dtype=np.int64)


def _split(codes: np.ndarray, factors: np.ndarray, test: Pair | None, seed: int) -> tuple[Pair, Pair]:
    """Points to fit on and points to score on: ``test`` when given, else a seeded third held out."""
    codes, factors = _check(codes, factors)
    if test is not None:
        return (codes, factors), _check(*test)
    order = np.random.default_rng(seed).permutation(len(codes))
    cut = len(codes) - max(1, len(codes) // 3)
    fit, score = order[:cut], order[cut:]
    return (codes[fit], factors[fit]), (codes[score], factors[score])


def histogram_discretize(codes: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Each code dimension as bin indices of a ``bins``-bin equal-width histogram over its range."""
    codes = np.asarray(codes, dtype=np.float64)
    return np.column_stack([np.digitize(c, np.histogram(c, bins)[1][:-1]) for c in codes.T])


def mutual_information(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information (nats) of each discrete code dimension with each factor, ``(Z, K)``."""
    from sklearn.metrics import mutual_info_score

    return np.array([[mutual_info_score(f, c) for f in factors.T] for c in discrete_codes.T])


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = BINS) -> float:
    """The mutual information gap in [0, 1] (see the module's docstring)."""
    codes, factors = _check(codes, factors)
    factors = factors[:, _varying(factors)]
    if factors.shape[1] == 0 or codes.shape[1] == 0:
        return 0.0
    m = mutual_information(histogram_discretize(codes, bins), factors)
    entropy = np.array([mutual_information(f[:, None], f[:, None])[0, 0] for f in factors.T])
    top = np.sort(m, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(factors.shape[1])
    return float(np.mean((top[0] - second) / entropy))


def _entropy_complement(p: np.ndarray, axis: int) -> np.ndarray:
    """``1 - H(p)`` along ``axis`` in base ``p.shape[axis]`` (``1e-11`` added, as disentanglement_lib)."""
    from scipy.stats import entropy

    base = p.shape[axis]
    if base < 2:
        return np.ones(p.shape[1 - axis])
    return 1.0 - entropy(p + 1e-11, base=base, axis=axis)


def dci_scores(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness of an importance matrix ``R[code, factor]``."""
    r = np.abs(np.asarray(importance, dtype=np.float64))
    weights = r if r.sum() > 0 else np.ones_like(r)
    d = float(np.sum(_entropy_complement(r, axis=1) * weights.sum(1) / weights.sum()))
    c = float(np.sum(_entropy_complement(r, axis=0) * weights.sum(0) / weights.sum()))
    return d, c


def dci(codes: np.ndarray, factors: np.ndarray, test: Pair | None = None, seed: int = 0,
        max_train: int | None = DCI_TRAIN) -> dict[str, float]:
    """``{disentanglement, completeness, informativeness}``: one ``GradientBoostingClassifier``
    (scikit-learn's defaults, ``random_state=seed``) per factor, fit on ``codes``/``factors`` (a
    seeded subset of ``max_train`` of them where there are more) and scored on ``test`` (codes,
    factors) when given, else on a seeded third of the points."""
    from sklearn.ensemble import GradientBoostingClassifier

    (x, f), (x_test, f_test) = _split(codes, factors, test, seed)
    if max_train is not None and len(x) > max_train:
        pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:max_train])
        x, f = x[pick], f[pick]
    keep = _varying(f)
    importance = np.zeros((x.shape[1], len(keep)))
    accuracy = []
    for col, j in enumerate(keep):
        model = GradientBoostingClassifier(random_state=seed).fit(x, f[:, j])
        importance[:, col] = np.abs(model.feature_importances_)
        accuracy.append(float(np.mean(model.predict(x_test) == f_test[:, j])))
    if not accuracy:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": 0.0}
    d, c = dci_scores(importance)
    return {"disentanglement": d, "completeness": c, "informativeness": float(np.mean(accuracy))}


def sap(
    codes: np.ndarray, factors: np.ndarray, test: Pair | None = None, seed: int = 0, classifier: str = "linear"
) -> float:
    """The SAP score (see the module's docstring): fit on ``codes``/``factors``, scored on
    ``test`` when given, else on a seeded third of the points; ``classifier`` ``linear``
    (disentanglement_lib's) or ``threshold``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    if classifier not in ("linear", "threshold"):
        raise ValueError(f"sap: classifier {classifier!r}; choose linear or threshold")
    (x, f), (x_test, f_test) = _split(codes, factors, test, seed)
    keep = _varying(f)
    if len(keep) == 0 or x.shape[1] < 2:
        return 0.0
    scores = np.zeros((x.shape[1], len(keep)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(x.shape[1]):
            for col, j in enumerate(keep):
                if classifier == "linear":
                    model = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
                else:
                    model = DecisionTreeClassifier(max_leaf_nodes=max(2, len(np.unique(f[:, j]))), random_state=seed)
                model.fit(x[:, i: i + 1], f[:, j])
                scores[i, col] = np.mean(model.predict(x_test[:, i: i + 1]) == f_test[:, j])
    top = np.sort(scores, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def _votes(
    codes: np.ndarray, factors: np.ndarray, scale: np.ndarray, n: int, batch: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` FactorVAE votes from the points given: ``(K, Z)`` counts of (fixed factor, argmin dimension)."""
    k = factors.shape[1]
    votes = np.zeros((k, codes.shape[1]), dtype=np.int64)
    groups = []  # per factor: the points sorted by its value, and where each value's run starts
    for j in range(k):
        order = np.argsort(factors[:, j], kind="stable")
        values, start, count = np.unique(factors[order, j], return_index=True, return_counts=True)
        groups.append((order, values, start, count))
    for lo in range(0, n, 1000):
        m = min(1000, n - lo)
        fixed = rng.integers(0, k, m)
        anchor = rng.integers(0, len(codes), m)
        rows = np.empty((m, batch), dtype=np.int64)
        for j in range(k):
            which = np.flatnonzero(fixed == j)
            if len(which) == 0:
                continue
            order, values, start, count = groups[j]
            g = np.searchsorted(values, factors[anchor[which], j])
            pick = start[g][:, None] + (rng.random((len(which), batch)) * count[g][:, None]).astype(np.int64)
            rows[which] = order[pick]
        local = codes[rows].var(axis=1, ddof=1) / scale ** 2
        np.add.at(votes, (fixed, local.argmin(axis=1)), 1)
    return votes


def factorvae_score(codes: np.ndarray, factors: np.ndarray, test: Pair | None = None, batch_size: int = 64,
                    n_train: int = 10_000, n_eval: int = 5_000, seed: int = 0) -> float:
    """The FactorVAE score (see the module's docstring): votes to fit the majority-vote classifier
    are drawn from ``codes``/``factors``, votes to score it from ``test`` when given, else from
    the same points."""
    codes, factors = _check(codes, factors)
    test_codes, test_factors = _check(*test) if test is not None else (codes, factors)
    keep = _varying(factors)
    std = codes.std(axis=0, ddof=1) if len(codes) > 1 else np.zeros(codes.shape[1])
    active = std >= PRUNE_STD
    if not active.any() or len(keep) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    fit = _votes(codes[:, active], factors[:, keep], std[active], n_train, batch_size, rng)
    classifier = fit.argmax(axis=0)
    scored = _votes(test_codes[:, active], test_factors[:, keep], std[active], n_eval, batch_size, rng)
    return float(scored[classifier, np.arange(scored.shape[1])].sum() / scored.sum())


def codes_of(model: AutoEncoder, split: Split, positions: np.ndarray, batch: int = 1024) -> np.ndarray:
    """The model's deterministic codes (``Code.code``: a posterior's mean) of some rows of a split,
    in evaluation mode, as float64 ``(len(positions), Z)``."""
    import torch

    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for lo in range(0, len(positions), batch):
                x, y = split.take(torch.as_tensor(positions[lo: lo + batch], dtype=torch.long))
                out.append(model.encode(x, y).code.reshape(len(x), -1).double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.spec.code_dim))


def disentanglement_metrics(model: AutoEncoder, data: DataBundle, device: Any = None, seed: int = 0,
                            dci_train: int | None = DCI_TRAIN) -> dict[str, float]:
    """``mig``, ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness``, ``sap`` and
    ``factorvae_score`` of ``model``'s deterministic codes; ``{}`` when ``data`` has no factors.

    The classifiers (DCI, SAP, the FactorVAE vote classifier) fit on up to 5,000 training rows
    and are scored on up to 2,000 test rows (seeded subsets), DCI's boosted trees on ``dci_train``
    of those training rows; MIG is computed on the test rows.
    The model already sits on its device (``device`` is accepted for the evaluation interface)."""
    if data.train.factors is None or data.test.factors is None:
        return {}
    rng = np.random.default_rng(seed)

    def subset(split: Split, most: int) -> Pair:
        positions = np.sort(rng.permutation(len(split))[:most])
        return codes_of(model, split, positions), split.factors[positions]

    train = subset(data.train, MAX_TRAIN)
    test = subset(data.test, MAX_TEST)
    scores = dci(*train, test=test, seed=seed, max_train=dci_train)
    return {
        "mig": mig(*test),
        "dci_disentanglement": scores["disentanglement"],
        "dci_completeness": scores["completeness"],
        "dci_informativeness": scores["informativeness"],
        "sap": sap(*train, test=test, seed=seed),
        "factorvae_score": factorvae_score(*train, test=test, seed=seed),
    }
