"""Runs of one pipeline over seeds: the key that ties them together, and the mean and 95%
interval of their metrics.

Every training run is tagged with its seed (:data:`SEED_TAG`, ``train.seed``) and a group key
(:data:`GROUP_TAG`): a digest of its resolved pipeline without ``train.seed`` and without the
settings that change neither the model nor its figures (``tracking.*``, ``description``). Runs
with the same key differ only in their seed; ``aepipe compare`` and ``aepipe report`` show them
as one row: the mean of each metric over the runs and its 95% t-interval over seeds
(``mean +- t(0.975, n - 1) * s / sqrt(n)``, scipy's ``stats.t.interval``). A run logged before
the tag existed gets the same key from its logged parameters.

This module imports no torch, mlflow or scipy at import time.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

SEED_KEY = "train.seed"
SEED_TAG, GROUP_TAG = "aepipe.seed", "aepipe.group"
#: settings left out of the group key: they change neither the model nor its figures
IGNORED = ("tracking.", "description")
#: the confidence of the intervals over seeds
CONFIDENCE = 0.95
#: MLflow keeps at most this many characters of a parameter's value
PARAM_CHARS = 6000


def group_key(params: dict[str, Any]) -> str:
    """The digest that runs of the same pipeline share whatever their seed: ``params`` are the
    run's flat settings (``Pipeline.flat()`` or the run's logged parameters; values compared as
    MLflow logs them, as text cut at :data:`PARAM_CHARS`)."""
    kept = {k: str(v)[:PARAM_CHARS] for k, v in params.items() if k != SEED_KEY and not k.startswith(IGNORED)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def seed_tags(params: dict[str, Any]) -> dict[str, str]:
    """The seed and group tags of a run with flat settings ``params``."""
    return {SEED_TAG: str(params.get(SEED_KEY, "")), GROUP_TAG: group_key(params)}


def run_group(run: Any) -> tuple[str, str]:
    """An MLflow run's group key and seed: its tags, else derived from its logged parameters."""
    found = run.data.tags.get(GROUP_TAG)
    params = run.data.params
    seed = run.data.tags.get(SEED_TAG, params.get(SEED_KEY, ""))
    return (found or group_key(params)), seed


def interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The mean of ``values`` (the finite ones) and its two-sided t-interval over them: (mean, lo,
    hi); lo and hi are NaN with fewer than two finite values, and equal the mean where they agree."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan, math.nan
    mean = math.fsum(finite) / len(finite)
    if len(finite) < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    sem = float(stats.sem(finite))
    if sem == 0.0:
        return mean, mean, mean
    lo, hi = stats.t.interval(confidence, len(finite) - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


@dataclass
class Group:
    """Runs that differ only in their seed: their ids and seeds (in the order given) and, per
    metric, the mean and the 95% interval over the runs (``intervals``: NaN bounds with one run)."""

    key: str
    run_ids: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.run_ids)


def summarize(key: str, members: list[tuple[str, str, dict[str, float]]]) -> Group:
    """The :class:`Group` of ``members``: (run id, seed, metrics) of runs with group key ``key``."""
    group = Group(key, [m[0] for m in members], [m[1] for m in members])
    names = dict.fromkeys(k for _, _, metrics in members for k in metrics)
    for name in names:
        mean, lo, hi = interval(m[2][name] for m in members if name in m[2])
        group.metrics[name] = mean
        group.intervals[name] = (lo, hi)
    return group


def overlaps(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Whether two intervals share a point (False where either is missing or NaN)."""
    if a is None or b is None or not all(math.isfinite(v) for v in (*a, *b)):
        return False
    return a[0] <= b[1] and b[0] <= a[1]


def best_and_near(values: dict[Any, float], spans: dict[Any, tuple[float, float]], higher: bool) -> tuple[set, set]:
    """The keys of ``values`` holding the best finite value (``higher``: the largest), and those
    within noise of it: whose interval (``spans``: over seeds, or over samples) overlaps a best
    one's interval, or holds the best value where the best has no interval; a key without an
    interval is within noise only where a best one has an interval that holds its value. The rule
    of the marks of ``aepipe report`` and ``aepipe compare``."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if not finite:
        return set(), set()
    best_value = max(finite.values()) if higher else min(finite.values())
    best = {k for k, v in finite.items() if v == best_value}
    near = set()
    for k, v in finite.items():
        if k in best or k not in spans and not any(b in spans for b in best):
            continue
        mine = spans.get(k, (v, v))
        if any(overlaps(mine, spans.get(b, (best_value, best_value))) for b in best):
            near.add(k)
    return best, near
