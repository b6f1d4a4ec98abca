"""The report's table: a run's page, the table's rows (runs of one pipeline over seeds as one row),
its columns and the best value of each."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class Figure:
    """One figure of the page: a PNG (base64) or, where it could not be drawn, a note."""

    title: str
    png: str | None = None
    note: str | None = None


@dataclass
class RunPage:
    run_id: str
    variant: str
    dataset: str
    status: str
    metrics: dict[str, float]
    study: str | None = None
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    group: str = ""  # the key of the runs of the same pipeline over seeds (aepipe.seeds)
    seed: str = ""


@dataclass
class TableRow:
    """One row of the table: a run, the runs of one pipeline over seeds (each value their mean,
    ``intervals`` the 95% t-interval over seeds), or a reference row (real against real data)."""

    label: str
    dataset: str
    run_ids: list[str]
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float, str]] = field(default_factory=dict)  # (lo, hi, "seeds" or "samples")
    seeds: list[str] = field(default_factory=list)
    reference: bool = False

    @property
    def row_id(self) -> str:
        import hashlib

        return self.run_ids[0] if self.run_ids else "reference-" + hashlib.sha256(self.label.encode()).hexdigest()[:8]


def table_rows(pages: Sequence[RunPage], group: bool = True) -> list[TableRow]:
    """The table's rows of ``pages``: with ``group``, the runs with one group key (differing only in
    their seed) as one row, in the place of the first; otherwise one row per run. A value's
    interval: over seeds for a group, else the bootstrap interval over samples the run logged
    (``eval_<metric>_lo``, ``eval_<metric>_hi``) where there is one."""
    from aepipe.compare import bound_names, is_bound
    from aepipe.seeds import summarize

    grouped: dict[str, list[RunPage]] = {}
    for p in pages:
        grouped.setdefault(p.group if group and p.group else p.run_id, []).append(p)
    rows = []
    for key_, members in grouped.items():
        first = members[0]
        label = first.variant + (f" (study {first.study})" if first.study else "")
        if len(members) == 1:
            metrics = {k: v for k, v in first.metrics.items() if not is_bound(k)}
            intervals = {}
            for k, v in metrics.items():
                lo, hi = (first.metrics.get(b) for b in bound_names(k))
                if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
                    intervals[k] = (lo, hi, "samples")
            rows.append(
                TableRow(label, first.dataset, [first.run_id], metrics, intervals, [first.seed] if first.seed else [])
            )
            continue
        summary = summarize(
            key_, [(p.run_id, p.seed, {k: v for k, v in p.metrics.items() if not is_bound(k)}) for p in members]
        )
        intervals = {k: (lo, hi, "seeds") for k, (lo, hi) in summary.intervals.items() if math.isfinite(lo)}
        rows.append(TableRow(f"{label} ({len(members)} seeds)", first.dataset, summary.run_ids, summary.metrics,
                             intervals, summary.seeds))
    return rows



def metric_columns(pages: Sequence[RunPage]) -> list[str]:
    """Every ``test_*`` metric the runs have, then every ``eval_*`` (not the bounds of intervals:
    they are shown in their metric's cell), then ``train_seconds``."""
    from aepipe.compare import is_bound

    keys = {k for p in pages for k in p.metrics if not is_bound(k)}
    columns = sorted(k for k in keys if k.startswith("test_")) + sorted(k for k in keys if k.startswith("eval_"))
    return columns + (["train_seconds"] if "train_seconds" in keys else [])


def higher_better(column: str) -> bool:
    from aepipe.evaluation import higher_is_better

    return higher_is_better(column)


def best_runs(pages: Sequence[RunPage], column: str) -> set[str]:
    """The runs holding the best finite value of ``column`` (ties: all of them)."""
    values = {p.run_id: p.metrics[column] for p in pages if column in p.metrics and math.isfinite(p.metrics[column])}
    if not values:
        return set()
    best = max(values.values()) if higher_better(column) else min(values.values())
    return {run for run, v in values.items() if v == best}


def best_rows(rows: Sequence[TableRow], column: str) -> tuple[set[str], set[str]]:
    """The rows (by :attr:`TableRow.row_id`; reference rows never count) holding the best finite
    value of ``column``, and the others within noise of it: their interval (over seeds, or over
    samples) overlaps a best row's interval (or holds its value, where the best has none)
    (:func:`aepipe.seeds.best_and_near`). None for a column without a better direction (``eval_kl``)."""
    from aepipe.evaluation import has_direction
    from aepipe.seeds import best_and_near

    if not has_direction(column):
        return set(), set()
    values = {r.row_id: r.metrics[column] for r in rows if not r.reference and column in r.metrics}
    spans = {r.row_id: r.intervals[column][:2] for r in rows if column in r.intervals}
    return best_and_near(values, spans, higher_better(column))
