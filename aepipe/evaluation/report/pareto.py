"""The report's Pareto plot: which two metrics, the runs on the front, and the plot."""

from __future__ import annotations

import math
from typing import Sequence

from aepipe.errors import ConfigError
from aepipe.evaluation.report.figures import new_figure, png
from aepipe.evaluation.report.table import Figure, RunPage, higher_better

#: the metric pairs a Pareto plot falls back to, in order: the first that two runs have is drawn
PARETO_PAIRS = (("eval_l0", "eval_fvu"), ("eval_fid", "eval_mse"), ("test_neg_elbo", "test_mse"),
                ("test_kl", "test_recon"),
                ("test_loss", "test_mse"), ("train_seconds", "test_mse"))


def parse_pareto(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    parts = [t.strip() for t in text.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ConfigError(f"--pareto {text!r}: give two different metrics as X,Y (e.g. eval_fid,eval_mse)")
    return parts[0], parts[1]


def choose_pareto(pages: Sequence[RunPage], wanted: tuple[str, str] | None) -> tuple[str, str] | None:
    """``wanted`` (each metric checked: some run must have it), else the first pair of
    :data:`PARETO_PAIRS` that two runs have (one, for a report of one run); None if none."""
    if wanted is not None:
        have = sorted({k for p in pages for k in p.metrics})
        for name in wanted:
            if not any(name in p.metrics for p in pages):
                raise ConfigError(f"--pareto: no run has metric '{name}'; they have: {', '.join(have)}")
        return wanted
    need = min(2, len(pages))
    for pair in PARETO_PAIRS:
        if sum(all(k in p.metrics for k in pair) for p in pages) >= need:
            return pair
    return None


def pareto_front(pages: Sequence[RunPage], pair: tuple[str, str]) -> list[str]:
    """Run ids not dominated on ``pair`` (each metric in its better direction) among the runs
    with finite values of both."""
    signs = [-1.0 if higher_better(k) else 1.0 for k in pair]  # minimise sign * value
    points = {p.run_id: tuple(s * p.metrics[k] for s, k in zip(signs, pair)) for p in pages
              if all(k in p.metrics and math.isfinite(p.metrics[k]) for k in pair)}

    def dominated(a: tuple[float, ...]) -> bool:
        return any(all(o <= v for o, v in zip(other, a)) and other != a for other in points.values())

    return [run for run, point in points.items() if not dominated(point)]


def pareto_figure(pages: Sequence[RunPage], pair: tuple[str, str], front: list[str]) -> Figure:
    x_key, y_key = pair
    fig = new_figure(7.5, 5.0)
    ax = fig.add_axes((0.12, 0.12, 0.84, 0.78))
    shown = [p for p in pages if all(k in p.metrics and math.isfinite(p.metrics[k]) for k in pair)]
    for p in shown:
        on = p.run_id in front
        ax.scatter(p.metrics[x_key], p.metrics[y_key], s=70 if on else 30, marker="*" if on else "o",
                   color="tab:red" if on else "tab:blue", zorder=3)
        ax.annotate(f"{p.variant} {p.run_id[:6]}", (p.metrics[x_key], p.metrics[y_key]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    line = sorted((p.metrics[x_key], p.metrics[y_key]) for p in shown if p.run_id in front)
    if len(line) > 1:
        ax.plot(*zip(*line), color="tab:red", alpha=0.5, linestyle="--", zorder=2)
    arrow = {True: "higher is better", False: "lower is better"}
    ax.set_xlabel(f"{x_key} ({arrow[higher_better(x_key)]})")
    ax.set_ylabel(f"{y_key} ({arrow[higher_better(y_key)]})")
    ax.set_title(f"{len(front)} of {len(shown)} runs on the Pareto front (red stars)", fontsize=10)
    ax.grid(alpha=0.3)
    note = (
        None if len(shown) == len(pages) else f"{len(pages) - len(shown)} run(s) lack one of the two metrics: not shown"
    )
    return Figure(f"Pareto plot: {y_key} against {x_key}", png(fig), note)
