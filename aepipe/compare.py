"""``aepipe compare`` and ``aepipe zoo``: runs side by side, read from MLflow without retraining."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

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
    row = {}
    for name, key in COLUMNS:
        if key == "run_id":
            row[name] = run.info.run_id
        elif key.startswith("tags."):
            row[name] = run.data.tags.get(key[5:], "")
        else:
            row[name] = run.data.metrics.get(key[8:])
    # every test and evaluation metric the run logged: eval_* are shown, test_* may be asked for (--columns)
    row.update({k: v for k, v in run.data.metrics.items() if k.startswith(("eval_", "test_"))})
    return row


def collect(targets: list[str], experiments: list[str]) -> list[dict[str, Any]]:
    """Rows for run ids and study names in ``targets`` (a study contributes its best trial), or,
    with no targets, the latest finished run of each variant in ``experiments`` (default: all)."""
    rows = []
    for picked in pick(targets, experiments):
        row = _row(picked.run)
        if picked.study is not None:
            row["variant"] = f"{row['variant']} (study {picked.study})"
        rows.append(row)
    return rows


@dataclass
class Picked:
    """A run chosen by :func:`pick`, with the study it was chosen for (and that study's parent run)."""

    run: Any  # an mlflow.entities.Run
    study: str | None = None
    study_run_id: str | None = None


def pick(targets: list[str], experiments: list[str], trials: bool = False, experiment_targets: bool = False) -> list[Picked]:
    """The runs that ``targets`` name: run ids; study names (the best trial, or with ``trials``
    every finished trial); with ``experiment_targets``, experiment names (the latest finished run
    of each variant there). No targets: the latest finished run of each variant in
    ``experiments`` (default: all)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from aepipe import tracking
    from aepipe.errors import RunNotFoundError
    from aepipe.secrets import mask

    tracking.setup()
    tracking.store.warn_if_damaged()  # a damaged page of runs reads as no runs: say why
    client = MlflowClient()
    tracker = tracking.default_tracker()
    active = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    exp_ids = [e.experiment_id for e in active if not experiments or e.name in experiments]
    if experiments and not exp_ids:
        raise RunNotFoundError(f"no experiment named {', '.join(experiments)} in {mask(tracking.tracking_uri())}")
    picked: list[Picked] = []
    for target in targets:
        # a study's name is data: never pasted into a filter (quotes, any Unicode)
        studies = [r for eid in exp_ids for r in tracker.find_runs(eid, {"aepipe.study": target, "aepipe.role": "study"})]
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
            raise RunNotFoundError(f"{target!r}: no run id, study or experiment of that name in {mask(tracking.tracking_uri())}")
        picked.append(Picked(tracking.get_run(target)))
    if not targets:
        picked += [Picked(run) for run in _latest_per_variant(client, exp_ids)]
    return picked


def _latest_per_variant(client: Any, exp_ids: list[str]) -> list[Any]:
    """The latest finished top-level run of each (experiment, variant, dataset) in ``exp_ids``."""
    seen, found = set(), []
    runs = client.search_runs(exp_ids, "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=5000)
    for run in runs:
        tags = run.data.tags
        key = (run.info.experiment_id, tags.get("aepipe.variant"), tags.get("aepipe.dataset"))
        if "aepipe.variant" not in tags or "mlflow.parentRunId" in tags or key in seen:
            continue
        seen.add(key)
        found.append(run)
    return found


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The table's columns: the fixed ones, with every ``eval_*`` metric any row has (in the
    vocabulary's order) before ``train_seconds``."""
    from aepipe.evaluation import order

    names = [c for c, _ in COLUMNS]
    evals = order({k for r in rows for k in r if k.startswith("eval_")})
    at = names.index("train_seconds")
    return names[:at] + evals + names[at:]


def render(rows: list[dict[str, Any]], fmt: str, chosen: list[str] | None = None) -> str:
    """The rows as a text table, markdown or CSV, with the columns ``chosen`` (default:
    :func:`columns`); a column no run has is refused in one line naming those there are."""
    from aepipe.errors import ConfigError
    from aepipe.evaluation import higher_is_better

    names = columns(rows)
    if chosen:
        known = set(names) | {k for r in rows for k in r}
        unknown = [c for c in chosen if c not in known]
        if unknown:
            extra = sorted(k for k in known - set(names) if k.startswith("test_"))
            raise ConfigError(f"--columns: no run has {', '.join(unknown)}; there are {', '.join(names + extra)}")
        names = chosen
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=names, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(n + (" ↑" if n.startswith("eval_") and higher_is_better(n) else "") for n in names) + " |",
                 "|" + "---|" * len(names)]
        lines += ["| " + " | ".join(_fmt(r.get(n)) for n in names) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table

    table = Table(title="aepipe runs (lower is better; ↑: higher is better)")
    for n in names:
        shown = n + (" ↑" if n.startswith("eval_") and higher_is_better(n) else "")
        table.add_column(shown, justify="left" if n in ("variant", "dataset", "run_id") else "right")
    for r in rows:
        table.add_row(*(_fmt(r.get(n)) for n in names))
    console = Console(width=220, file=io.StringIO(), force_terminal=False)
    console.print(table)
    return console.file.getvalue()
