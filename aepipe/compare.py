"""``aepipe compare`` and ``aepipe zoo``: runs side by side, read from MLflow without retraining."""

from __future__ import annotations

import csv
import io
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
    return row


def collect(targets: list[str], experiments: list[str]) -> list[dict[str, Any]]:
    """Rows for run ids and study names in ``targets`` (a study contributes its best trial), or,
    with no targets, the latest finished run of each variant in ``experiments`` (default: all)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from aepipe import tracking
    from aepipe.errors import RunNotFoundError
    from aepipe.secrets import mask

    tracking.setup()
    tracking.store.warn_if_damaged()  # a damaged page of runs reads as no runs: say why
    client = MlflowClient()
    tracker = tracking.default_tracker()
    exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
               if not experiments or e.name in experiments]
    if experiments and not exp_ids:
        raise RunNotFoundError(f"no experiment named {', '.join(experiments)} in {mask(tracking.tracking_uri())}")
    rows = []
    for target in targets:
        # a study's name is data: never pasted into a filter (quotes, any Unicode)
        studies = [r for eid in exp_ids for r in tracker.find_runs(eid, {"aepipe.study": target, "aepipe.role": "study"})]
        if studies:
            best = studies[0].tags.get("best.run_id")
            if not best:
                raise RunNotFoundError(f"study '{target}' has no finished trial yet")
            row = _row(client.get_run(best))
            row["variant"] = f"{row['variant']} (study {target})"
            rows.append(row)
            continue
        rows.append(_row(tracking.get_run(target)))
    if not targets:
        seen = set()
        runs = client.search_runs(exp_ids, "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=5000)
        for run in runs:
            tags = run.data.tags
            key = (run.info.experiment_id, tags.get("aepipe.variant"), tags.get("aepipe.dataset"))
            if "aepipe.variant" not in tags or "mlflow.parentRunId" in tags or key in seen:
                continue
            seen.add(key)
            rows.append(_row(run))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    names = [c for c, _ in COLUMNS]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        lines += ["| " + " | ".join(_fmt(r[n]) for n in names) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    from rich.console import Console
    from rich.table import Table

    table = Table(title="aepipe runs (test metrics; lower is better)")
    for n in names:
        table.add_column(n, justify="left" if n in ("variant", "dataset", "run_id") else "right")
    for r in rows:
        table.add_row(*(_fmt(r[n]) for n in names))
    console = Console(width=220, file=io.StringIO(), force_terminal=False)
    console.print(table)
    return console.file.getvalue()
