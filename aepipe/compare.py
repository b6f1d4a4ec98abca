"""``aepipe compare`` and ``aepipe zoo``: runs side by side, read from MLflow without retraining."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Callable

COLUMNS = [
    ("variant", "tags.aepipe.variant"),
    ("dataset", "tags.aepipe.dataset"),
    ("test_mse", "metrics.test_mse"),
    ("test_neg_elbo", "metrics.test_neg_elbo"),
    ("test_iw_nll", "metrics.test_iw_nll"),
    ("test_denoising_mse", "metrics.test_denoising_mse"),
    ("train_seconds", "metrics.train_seconds"),
    ("epochs", "metrics.epochs_trained"),
    ("run_id", "run_id"),
]


def _row(run) -> dict[str, Any]:
    from aepipe.seeds import run_group

    row: dict[str, Any] = {}
    for name, key in COLUMNS:
        if key == "run_id":
            row[name] = run.info.run_id
        elif key.startswith("tags."):
            row[name] = run.data.tags.get(key[5:], "")
        else:
            row[name] = run.data.metrics.get(key[8:])
    # every test and evaluation metric the run logged: eval_* are shown, test_* may be asked for (--columns)
    row.update({k: v for k, v in run.data.metrics.items() if k.startswith(("eval_", "test_"))})
    row["_group"], row["_seed"] = run_group(run)  # private keys (a leading _) are never columns
    return row


def collect(targets: list[str], experiments: list[str], group: bool = True, references: bool = True,
            device: Any = "cpu", pm: Any = None, echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows for run ids and study names in ``targets`` (a study contributes its best trial), or,
    with no targets, the latest finished run of each variant in ``experiments`` (default: all;
    with the runs of the same pipeline that differ from it only in their seed). With ``group``,
    runs that differ only in their seed are one row (:func:`group_rows`); with ``references``,
    a reference row (:mod:`aepipe.evaluation.reference`) follows for each dataset and sample
    count whose generation metrics the rows hold."""
    rows, runs = [], []
    for picked in pick(targets, experiments):
        row = _row(picked.run)
        if picked.study is not None:
            row["variant"] = f"{row['variant']} (study {picked.study})"
        rows.append(row)
        runs.append(picked.run)
    if group:
        rows = group_rows(rows)
    if references:
        from aepipe.evaluation.reference import reference_rows

        rows += [reference_row(r) for r in reference_rows(runs, device, pm, echo)]
    return rows


def reference_row(ref: Any) -> dict[str, Any]:
    """A table row of an :class:`aepipe.evaluation.reference.ReferenceRow`."""
    return {"variant": ref.label, "dataset": ref.dataset, "run_id": "", **ref.metrics, "_reference": True}


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with those of one group (same pipeline but for the seed: :mod:`aepipe.seeds`)
    merged into one, in the place of the first: each number the mean over the runs, ``_ci`` its
    95% interval over them, ``seeds`` the seeds, ``_runs`` the run ids. A group of one run is
    left as it is."""
    from aepipe.seeds import summarize

    by_group: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_group.setdefault(row.get("_group") or row["run_id"], []).append(row)
    out = []
    for name, members in by_group.items():
        if len(members) == 1:
            out.append({**members[0], "seeds": str(members[0].get("_seed", ""))})
            continue
        numbers = [(m["run_id"], str(m.get("_seed", "")),
                    {k: float(v) for k, v in m.items()
                     if not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)})
                   for m in members]
        summary = summarize(name, numbers)
        first = members[0]
        merged = {k: v for k, v in first.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        merged.update(summary.metrics)
        merged.update(seeds=",".join(summary.seeds), run_id=f"{first['run_id']} +{len(members) - 1}",
                      _runs=summary.run_ids, _ci=summary.intervals, _n=len(members))
        out.append(merged)
    return out


@dataclass
class Picked:
    """A run chosen by :func:`pick`, with the study it was chosen for (and that study's parent run)."""

    run: Any  # an mlflow.entities.Run
    study: str | None = None
    study_run_id: str | None = None


def pick(
    targets: list[str], experiments: list[str], trials: bool = False, experiment_targets: bool = False
) -> list[Picked]:
    """The runs that ``targets`` name: run ids; study names (the best trial, or with ``trials``
    every finished trial); with ``experiment_targets``, experiment names (the latest finished run
    of each variant there). No targets: the latest finished run of each variant in
    ``experiments`` (default: all)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from aepipe import tracking
    from aepipe.errors import RunNotFoundError
    from aepipe.secrets import mask
    from aepipe.tracking.health import warn_if_damaged

    tracking.setup()
    warn_if_damaged()  # a damaged page of runs reads as no runs: say why
    client = MlflowClient()
    tracker = tracking.default_tracker()
    active = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    exp_ids = [e.experiment_id for e in active if not experiments or e.name in experiments]
    if experiments and not exp_ids:
        raise RunNotFoundError(f"no experiment named {', '.join(experiments)} in {mask(tracking.tracking_uri())}")
    picked: list[Picked] = []
    for target in targets:
        # a study's name is data: never pasted into a filter (quotes, any Unicode)
        studies = [
            r for eid in exp_ids for r in tracker.find_runs(eid, {"aepipe.study": target, "aepipe.role": "study"})
        ]
        if studies:
            parent = studies[0]
            if trials:
                members = tracker.find_runs(parent.experiment_id, {"aepipe.study": target})
                done = [client.get_run(r.run_id) for r in reversed(members)
                        if r.status == "FINISHED" and r.tags.get("aepipe.role") != "study"]
                if not done:
                    raise RunNotFoundError(f"study '{target}' has no finished trial yet")
                picked += [Picked(run, target, parent.run_id) for run in done]
                continue
            best = parent.tags.get("best.run_id")
            if not best:
                raise RunNotFoundError(f"study '{target}' has no finished trial yet")
            picked.append(Picked(client.get_run(best), target, parent.run_id))
            continue
        named = [e.experiment_id for e in active if e.name == target] if experiment_targets else []
        if named:
            found = _latest_per_variant(client, named)
            if not found:
                raise RunNotFoundError(f"experiment '{target}' has no finished aepipe run")
            picked += [Picked(run) for run in found]
            continue
        if experiment_targets and not tracking.store.RUN_ID.fullmatch(target):
            raise RunNotFoundError(
                f"{target!r}: no run id, study or experiment of that name in {mask(tracking.tracking_uri())}"
            )
        picked.append(Picked(tracking.get_run(target)))
    if not targets:
        picked += [Picked(run) for run in _latest_per_variant(client, exp_ids)]
    return picked


def _latest_per_variant(client: Any, exp_ids: list[str]) -> list[Any]:
    """The latest finished top-level run of each (experiment, variant, dataset) in ``exp_ids``,
    with the latest finished run of each other seed of the same pipeline (:mod:`aepipe.seeds`)."""
    from aepipe.seeds import run_group

    chosen: dict[tuple, tuple[str, set[str]]] = {}
    found = []
    runs = client.search_runs(
        exp_ids, "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=5000
    )
    for run in runs:
        tags = run.data.tags
        key = (run.info.experiment_id, tags.get("aepipe.variant"), tags.get("aepipe.dataset"))
        if "aepipe.variant" not in tags or "mlflow.parentRunId" in tags:
            continue
        group, seed = run_group(run)
        if key not in chosen:
            chosen[key] = (group, {seed})
            found.append(run)
        elif chosen[key][0] == group and seed not in chosen[key][1]:
            chosen[key][1].add(seed)
            found.append(run)
    return found


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def is_bound(name: str) -> bool:
    """Whether ``name`` is a bound of a generation metric's interval over samples
    (``eval_fid_lo``, ``eval_fid_inception_hi.gmm``)."""
    from aepipe.evaluation import GROUPS, metric_of

    base = name.partition(".")[0]
    return name.startswith("eval_") and metric_of(base) in GROUPS["generation"] and base.endswith(("_lo", "_hi")) \
        and base[len("eval_"):] != metric_of(base)


def bound_names(name: str) -> tuple[str, str]:
    """The logged names of the lower and upper bound of ``name``'s interval over samples."""
    base, dot, sampler = name.partition(".")
    return f"{base}_lo{dot}{sampler}", f"{base}_hi{dot}{sampler}"


def spread(row: dict[str, Any], name: str) -> tuple[str, float, float] | None:
    """The interval shown with ``row``'s value of ``name``: ("seeds", lo, hi), its 95% interval
    over seeds (a group of runs), else ("samples", lo, hi), the bootstrap interval over samples
    the run logged; None where there is neither."""
    import math

    lo, hi = (row.get("_ci") or {}).get(name, (math.nan, math.nan))
    if isinstance(lo, float) and math.isfinite(lo) and math.isfinite(hi):
        return "seeds", lo, hi
    lo_name, hi_name = bound_names(name)
    lo, hi = row.get(lo_name), row.get(hi_name)
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and math.isfinite(lo) and math.isfinite(hi):
        return "samples", float(lo), float(hi)
    return None


def _cell(row: dict[str, Any], name: str) -> str:
    """A value as the text and markdown tables show it: a group's mean +- the half-width of its
    interval over seeds, a run's value with its interval over samples in brackets."""
    text = _fmt(row.get(name))
    found = spread(row, name) if isinstance(row.get(name), float) else None
    if found is None:
        return text
    kind, lo, hi = found
    if kind == "seeds":
        return f"{text} ± {(hi - lo) / 2:.2g}"
    return f"{text} [{lo:.3g}, {hi:.3g}]"


def marks(rows: list[dict[str, Any]], names: list[str]) -> dict[tuple[int, str], str]:
    """``{(row index, column): "best" or "near"}`` for the ``eval_*`` columns of ``names`` with a
    better direction (not ``eval_kl``): the best value of the column among the rows that are not
    reference rows, and the values within noise of it (their interval, over seeds or over samples,
    overlaps the best one's: :func:`aepipe.seeds.best_and_near`, the rule of ``aepipe report``)."""
    from aepipe.evaluation import has_direction, higher_is_better
    from aepipe.seeds import best_and_near

    out: dict[tuple[int, str], str] = {}
    for name in names:
        if not name.startswith("eval_") or not has_direction(name):
            continue
        values = {i: float(r[name]) for i, r in enumerate(rows) if not r.get("_reference")
                  and isinstance(r.get(name), (int, float)) and not isinstance(r.get(name), bool)}
        if len(values) < 2:  # one contender: nothing to mark
            continue
        spans = {i: found[1:] for i in values if (found := spread(rows[i], name)) is not None}
        best, near = best_and_near(values, spans, higher_is_better(name))
        out.update({(i, name): "best" for i in best})
        out.update({(i, name): "near" for i in near})
    return out


#: how each format shows a mark: (best, within noise of the best)
MARKS = {"markdown": ("**{}**", "≈ {}"), "text": ("{} *", "≈ {}")}


def _marked(text: str, mark: str | None, fmt: str) -> str:
    if not mark or not text:
        return text
    return MARKS[fmt][0 if mark == "best" else 1].format(text)


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The table's columns: the fixed ones, with every ``eval_*`` metric any row has (in the
    vocabulary's order; not the bounds of intervals, shown in the metric's cell) before
    ``train_seconds``, and ``seeds`` after ``dataset`` where a row groups several runs."""
    from aepipe.evaluation import order

    names = [c for c, _ in COLUMNS]
    evals = order({k for r in rows for k in r if k.startswith("eval_") and not is_bound(k)})
    at = names.index("train_seconds")
    names = names[:at] + evals + names[at:]
    if any(r.get("_n", 1) > 1 for r in rows):
        names.insert(names.index("dataset") + 1, "seeds")
    return names


_MD = str.maketrans(
    {"|": "\\|", "\\": "\\\\", "<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ", "\r": " ", "`": "\\`"}
)


def md(text: str) -> str:
    """``text`` safe in a markdown table cell: ``|`` and backslashes escaped, HTML's ``< > &``
    as entities (shown, never interpreted), line breaks as spaces."""
    return text.translate(_MD)


def _csv_columns(rows: list[dict[str, Any]], names: list[str]) -> list[str]:
    """CSV's columns: ``names`` with, after each metric, its interval over seeds (``_ci95_lo``,
    ``_ci95_hi``) where a row has one and the bounds of its interval over samples where logged."""
    import math

    out = []
    for name in names:
        out.append(name)
        if any(math.isfinite((r.get("_ci") or {}).get(name, (math.nan,))[0]) for r in rows):
            out += [f"{name}_ci95_lo", f"{name}_ci95_hi"]
        out += [b for b in bound_names(name) if name.startswith("eval_") and any(b in r for r in rows)]
    return out


def render(rows: list[dict[str, Any]], fmt: str, chosen: list[str] | None = None) -> str:
    """The rows as a text table, markdown or CSV, with the columns ``chosen`` (default:
    :func:`columns`); a column no run has is refused in one line naming those there are."""
    from aepipe.errors import ConfigError
    from aepipe.evaluation import higher_is_better

    names = columns(rows)
    if chosen:
        known = set(names) | {k for r in rows for k in r if not k.startswith("_")}
        unknown = [c for c in chosen if c not in known]
        if unknown:
            extra = sorted(k for k in known - set(names) if k.startswith("test_"))
            raise ConfigError(f"--columns: no run has {', '.join(unknown)}; there are {', '.join(names + extra)}")
        names = chosen
    if fmt == "csv":
        fields = _csv_columns(rows, names)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, restval="", extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            out = dict(r)
            for name, (lo, hi) in (r.get("_ci") or {}).items():
                out[f"{name}_ci95_lo"], out[f"{name}_ci95_hi"] = lo, hi
            if r.get("_runs"):
                out["run_id"] = ";".join(r["_runs"])
            writer.writerow(out)
        return buf.getvalue()
    arrows = {n: n + (" ↑" if n.startswith("eval_") and higher_is_better(n) else "") for n in names}
    marked = marks(rows, names)
    if fmt == "markdown":
        lines = ["| " + " | ".join(md(arrows[n]) for n in names) + " |", "|" + "---|" * len(names)]
        lines += ["| " + " | ".join(_marked(md(_cell(r, n)), marked.get((i, n)), fmt) for n in names) + " |"
                  for i, r in enumerate(rows)]
        notes = _notes(rows, marked, fmt)
        return "\n".join(lines) + "\n" + ("\n" + "\n".join(md(n) for n in notes) + "\n" if notes else "")
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="aepipe runs (lower is better; ↑: higher is better)")
    for n in names:
        table.add_column(escape(arrows[n]),
                         justify="left" if n in ("variant", "dataset", "run_id", "seeds") else "right")
    for i, r in enumerate(rows):
        table.add_row(*(escape(_marked(_cell(r, n), marked.get((i, n)), fmt)) for n in names))
    console = Console(width=220, file=io.StringIO(), force_terminal=False)
    console.print(table)
    notes = _notes(rows, marked, fmt)
    return console.file.getvalue() + "".join(n + "\n" for n in notes)


def _notes(rows: list[dict[str, Any]], marked: dict[tuple[int, str], str] | None = None,
           fmt: str = "text") -> list[str]:
    """What the table's marks mean, for the marks it has."""
    out = []
    if any(r.get("_n", 1) > 1 for r in rows):
        out.append("a ± b: the mean over the seeds of one pipeline and the half-width of its 95% t-interval over them.")
    if any(spread(r, n) and spread(r, n)[0] == "samples" for r in rows for n in r if isinstance(r.get(n), float)):
        out.append("a [lo, hi]: a run's value and its 95% bootstrap interval over samples.")
    if any(r.get("_reference") for r in rows):
        out.append("reference: the real test split against as many other real rows as the runs drew samples, in the "
                   "same feature space: the floor a perfect generator would score.")
    if marked:
        best = "**bold**" if fmt == "markdown" else "a *"
        out.append(f"{best}: the best value of the column (eval_ columns with a better direction, not eval_kl; the "
                   "reference row is no contender); ≈: its 95% interval (over seeds, or over samples for a single "
                   "run) overlaps the best one's: within noise of it (the rule of aepipe report's marks).")
    return out
