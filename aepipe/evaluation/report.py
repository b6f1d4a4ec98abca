"""``aepipe report``: trained runs compared on one self-contained HTML page.

The page holds a sortable table of every run's ``test_*`` and ``eval_*`` metrics and its
``train_seconds`` (the best value of each column marked; :func:`aepipe.evaluation.higher_is_better`
says which way is better; runs that differ only in their seed are one row, their mean and 95%
interval over seeds, and a value whose interval overlaps the best one's is marked as within noise
of it; a reference row holds what real data scores against real data in the same feature space,
with a paragraph on how to read it), a Pareto plot of two metrics, and per run its reconstructions, samples
(through the model's default sampler and every sampler ``fit-sampler`` logged), interpolations
between test codes, a map of its test codes and its training curves. Everything is inside the file:
images are PNG ``data:`` URIs, the one script (sorting) is inline, nothing is fetched.

Figures that need the model are drawn from the run's logged model and its own data split (the
pipeline stored with the model); a run that logged no model (``tracking.log_model = false``) keeps
its table row and curves, and shows the images it logged itself, with a note saying so.

Where the page is kept in MLflow: a study's page is an artifact (``report/report.html``) of the
study's parent run; a page of runs or experiments is the artifact of a new run named ``report`` in
the experiment of the first run, tagged ``aepipe.role = report`` (and ``aepipe.report.runs``: the
run ids), which ``compare`` and the report's own experiment targets never take for a trained run.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from aepipe.errors import AepipeError, ConfigError, RunNotFoundError

#: the metric pairs a Pareto plot falls back to, in order: the first that two runs have is drawn
PARETO_PAIRS = (("eval_fid", "eval_mse"), ("test_neg_elbo", "test_mse"), ("test_kl", "test_recon"),
                ("test_loss", "test_mse"), ("train_seconds", "test_mse"))
#: artifact folder of the page in MLflow, and the tag of a run that holds a report
ARTIFACT_DIR, ROLE = "report", "report"
TEXT_COLUMNS = ("variant", "dataset", "run_id")
LATENT_POINTS = 2000
DPI = 80


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
            rows.append(TableRow(label, first.dataset, [first.run_id], metrics, intervals, [first.seed] if first.seed else []))
            continue
        summary = summarize(key_, [(p.run_id, p.seed, {k: v for k, v in p.metrics.items() if not is_bound(k)}) for p in members])
        intervals = {k: (lo, hi, "seeds") for k, (lo, hi) in summary.intervals.items() if math.isfinite(lo)}
        rows.append(TableRow(f"{label} ({len(members)} seeds)", first.dataset, summary.run_ids, summary.metrics, intervals,
                             summary.seeds))
    return rows


def build_report(targets: Sequence[str], output: Path, experiments: Sequence[str] = (), pareto: str | None = None,
                 device: str = "auto", log: bool = True, echo: Callable[[str], None] | None = None,
                 pm: Any = None, group: bool = True, references: bool = True) -> Path:
    """Write the report of ``targets`` (run ids, study names: every finished trial, experiment
    names: the latest finished run of each variant; none: the latest of each variant in
    ``experiments``) to ``output`` and, with ``log``, keep it in MLflow (see the module's
    docstring). ``pareto``: ``"X,Y"``, two metrics to plot against each other (default: the
    first of :data:`PARETO_PAIRS` that two runs have). ``group``: runs that differ only in their
    seed are one row of the table (mean and 95% interval over seeds); ``references``: a reference
    row (real against real data, :mod:`aepipe.evaluation.reference`) under generation metrics.
    Returns ``output``."""
    from aepipe.compare import pick
    from aepipe.files import write_text
    from aepipe.limits import check_output
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking import default_tracker

    echo = echo or (lambda line: None)
    output = Path(output)
    check_output(output, "-o")
    _probe(output)
    wanted = _parse_pareto(pareto)
    if log:
        from aepipe.tracking.store import check_writable

        check_writable("report")
    picked = pick(list(targets), list(experiments), trials=True, experiment_targets=True)
    seen, chosen = set(), []
    for p in picked:
        if p.run.info.run_id not in seen:
            seen.add(p.run.info.run_id)
            chosen.append(p)
    if not chosen:
        raise RunNotFoundError("no finished aepipe runs to report")
    from aepipe.seeds import run_group

    pages = [RunPage(p.run.info.run_id, p.run.data.tags.get("aepipe.variant", ""), p.run.data.tags.get("aepipe.dataset", ""),
                     p.run.info.status, dict(p.run.data.metrics), p.study, group=run_group(p.run)[0], seed=run_group(p.run)[1])
             for p in chosen]
    columns = metric_columns(pages)
    pair = choose_pareto(pages, wanted)
    pm = pm or get_plugin_manager()
    tracker = default_tracker()
    from aepipe.training.device import select_device

    dev = select_device(device)
    rows = table_rows(pages, group)
    if references:
        from aepipe.evaluation.reference import reference_rows

        for ref in reference_rows([p.run for p in chosen], dev, pm, echo):
            rows.append(TableRow(ref.label, ref.dataset, [], ref.metrics, reference=True))
    data_cache: dict[str, Any] = {}
    for i, page in enumerate(pages, 1):
        started = time.perf_counter()
        page.figures = _run_figures(page, dev, tracker, pm, data_cache)
        echo(f"run {page.run_id} ({page.variant}): {len(page.figures)} figures in {time.perf_counter() - started:.1f}s "
             f"[{i}/{len(pages)}]")
    front = pareto_front(pages, pair) if pair else []
    pareto_figure = _pareto_figure(pages, pair, front) if pair else None
    title = "aepipe report: " + (", ".join(targets) if targets else ", ".join(experiments) or "latest runs")
    text = render_html(title, pages, columns, pair, front, pareto_figure, rows)
    write_text(output, text)
    if log:
        for where in _log(text, chosen, tracker):
            echo(f"logged the page to MLflow run {where} ({ARTIFACT_DIR}/report.html)")
    return output


def _probe(output: Path) -> None:
    """Refuse, before any work, an ``output`` whose folder refuses a new file (a read-only mount,
    /proc): permission bits alone do not say so for root."""
    import os

    folder = output.parent if str(output.parent) else Path(".")
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".aepipe-report-")
    except OSError as exc:
        raise ConfigError(f"-o {output}: the folder {folder} refuses new files ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(name)


# --- the table ------------------------------------------------------------------------------


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
    samples) overlaps a best row's interval (or holds its value, where the best has none)."""
    from aepipe.seeds import overlaps

    values = {r.row_id: r.metrics[column] for r in rows
              if not r.reference and column in r.metrics and math.isfinite(r.metrics[column])}
    if not values:
        return set(), set()
    best_value = max(values.values()) if higher_better(column) else min(values.values())
    best = {row for row, v in values.items() if v == best_value}
    spans = {r.row_id: r.intervals[column][:2] for r in rows if column in r.intervals}
    near = set()
    for row in values:
        if row in best or row not in spans and not any(b in spans for b in best):
            continue
        mine = spans.get(row, (values[row], values[row]))
        if any(overlaps(mine, spans.get(b, (best_value, best_value))) for b in best):
            near.add(row)
    return best, near


# --- the Pareto plot ------------------------------------------------------------------------


def _parse_pareto(text: str | None) -> tuple[str, str] | None:
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


def _pareto_figure(pages: Sequence[RunPage], pair: tuple[str, str], front: list[str]) -> Figure:
    x_key, y_key = pair
    fig = _new_figure(7.5, 5.0)
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
    note = None if len(shown) == len(pages) else f"{len(pages) - len(shown)} run(s) lack one of the two metrics: not shown"
    return Figure(f"Pareto plot: {y_key} against {x_key}", _png(fig), note)


# --- the figures of one run -----------------------------------------------------------------


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), dpi=100)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _attempt(title: str, draw: Callable[[], Any]) -> Figure:
    """``draw()``'s figure, or a note saying why it could not be drawn (a component that cannot
    sample, say): one figure failing never stops the page."""
    try:
        return Figure(title, _png(draw()))
    except Exception as exc:  # noqa: BLE001 - any component's failure becomes a visible note
        line = str(exc).splitlines()[0][:300] if str(exc) else ""
        return Figure(title, note=f"not drawn: {type(exc).__name__}: {line}")


def _run_figures(page: RunPage, device: Any, tracker: Any, pm: Any, data_cache: dict[str, Any]) -> list[Figure]:
    from aepipe.runs import load_model

    figures: list[Figure] = []
    try:
        model = load_model(page.run_id, device=str(device), tracker=tracker, pm=pm)
    except AepipeError as exc:
        model = None
        page.notes.append(f"no model to draw from ({exc}); shown instead: the images the run logged itself")
    if model is not None:
        data = _data(page.run_id, tracker, pm, device, data_cache)
        figures += _model_figures(page, model, data, tracker, pm)
    else:
        figures += _logged_images(page.run_id)
    figures.append(_curves(page))
    return figures


def _data(run_id: str, tracker: Any, pm: Any, device: Any, cache: dict[str, Any]) -> Any:
    """The run's data, split as it was (the pipeline stored with its model); one load per dataset."""
    from aepipe.config.stored import read_stored_file
    from aepipe.training.setup import load_data

    with tempfile.TemporaryDirectory() as tmp:
        found = tracker.download(run_id, "aepipe-model/pipeline.toml", Path(tmp))
        if found is None:
            raise RunNotFoundError(f"run {run_id}: its model's pipeline.toml is missing")
        pipeline = read_stored_file(pm, found, f"run {run_id}: aepipe-model/pipeline.toml")
    key = "\n".join([pipeline.dataset.name, pipeline.dataset.config.model_dump_json(), pipeline.settings.data.model_dump_json()])
    if key not in cache:
        cache[key] = load_data(pipeline, device)
    return cache[key]


def _model_figures(page: RunPage, model: Any, data: Any, tracker: Any, pm: Any) -> list[Figure]:
    import torch

    from aepipe import figures
    from aepipe.training.measure import codes

    name = f"{page.variant} ({page.run_id[:8]})"
    shape = data.image_shape
    out: list[Figure] = []

    @torch.no_grad()
    def reconstructions():
        x, y = data.test.head(20)
        return figures.reconstruction_grid(x.cpu().numpy(), model(x, y).cpu().numpy(), shape,
                                           f"{name}: test inputs (rows 1, 3) and reconstructions (rows 2, 4)")

    out.append(_attempt("Reconstructions", reconstructions))
    samplers = _samplers(page.run_id, model)
    if not samplers:
        out.append(Figure("Samples", note="a conditional model without a prior or a fitted sampler draws no meaningful "
                                          f"samples; fit one with: aepipe fit-sampler {page.run_id} --sampler NAME"))
    for sampler_name in samplers:
        label = "the model's default sampler" if sampler_name is None else f"sampler '{sampler_name}'"
        out.append(_attempt(f"Samples through {label}", lambda s=sampler_name, label=label: _samples(page.run_id, model, s, label,
                                                                                                       name, shape, tracker, pm)))
    out.append(_attempt("Interpolations between test codes", lambda: _interpolations(model, data, name, shape)))

    def latent():
        x, y = data.test.head(LATENT_POINTS)
        return figures.latent_scatter(codes(model, x, y), None if y is None else y.cpu().numpy(), f"{name}: test codes")

    out.append(_attempt("Latent map (test codes)", latent))
    return out


def _samplers(run_id: str, model: Any) -> list[str | None]:
    """None (the model's default: its own sampler, else its prior, else N(0, I)), then every
    sampler ``fit-sampler`` logged to the run."""
    from mlflow import MlflowClient

    own = model.sampler.name if model.sampler is not None else None
    logged = [a.path.rsplit("/", 1)[-1] for a in MlflowClient().list_artifacts(run_id, "samplers") if a.is_dir]
    default = [None] if (model.prior is not None or model.sampler is not None or not model.spec.conditional) else []
    return default + sorted(n for n in logged if n != own)


def _samples(run_id: str, model: Any, sampler_name: str | None, label: str, name: str, shape: Any, tracker: Any, pm: Any):
    import torch

    from aepipe import figures
    from aepipe.runs import load_sampler

    sampler = load_sampler(run_id, model, sampler_name, tracker, pm)
    device = next(model.parameters()).device
    torch.manual_seed(0)
    rows = None
    with torch.no_grad():
        if model.spec.conditional:
            classes = min(model.spec.n_classes, 10)
            y = torch.arange(classes, device=device).repeat_interleave(10)
            images = model.sample(len(y), y, sampler).cpu().numpy()
            rows = [f"class {c}" for c in range(classes)]
        else:
            images = model.sample(40, None, sampler).cpu().numpy()
    return figures.sample_grid(images, shape, f"{name}: samples through {label}" + (", one row per class" if rows else ""), rows)


def interpolation_pairs(labels: Any, n: int, conditional: bool, pairs: int = 4) -> list[tuple[int, int]]:
    """Pairs of test rows to interpolate between: of the same class for a conditional model (its
    label is kept along the line), of different classes otherwise (where labels are known)."""
    out: list[tuple[int, int]] = []
    for a in range(n):
        if len(out) == pairs:
            break
        for b in range(a + 1, n):
            if labels is None:
                out.append((a, b))
                break
            same = int(labels[a]) == int(labels[b])
            if same == conditional and all(b != q and a != q for pair in out for q in pair):
                out.append((a, b))
                break
    return out


def _interpolations(model: Any, data: Any, name: str, shape: Any, steps: int = 10):
    import torch

    from aepipe import figures

    x, y = data.test.head(200)
    labels = None if y is None else y.cpu().numpy()
    chosen = interpolation_pairs(labels, len(x), bool(model.spec.conditional))
    if not chosen:
        raise ValueError("the test split has too few rows to pair")
    t = torch.linspace(0, 1, steps, device=x.device)[:, None]
    images, rows = [], []
    with torch.no_grad():
        code = model.encode(x, y).code
        for a, b in chosen:
            line = (1 - t) * code[a] + t * code[b]
            keep = None if not model.spec.conditional else y[a].repeat(steps)
            images.append(model.decode(line, keep).cpu().numpy())
            rows.append(f"class {labels[a]}" if model.spec.conditional else
                        (f"{labels[a]} to {labels[b]}" if labels is not None else f"row {a} to {b}"))
    import numpy as np

    title = f"{name}: decoded lines between two test codes" + (" (label kept)" if model.spec.conditional else "")
    return figures.sample_grid(np.concatenate(images), shape, title, rows, cols=steps)


def _logged_images(run_id: str) -> list[Figure]:
    """The PNG figures the run logged itself (``images/``)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in client.list_artifacts(run_id, "images"):
            if item.is_dir or not item.path.endswith(".png"):
                continue
            local = Path(client.download_artifacts(run_id, item.path, tmp))
            title = item.path.rsplit("/", 1)[-1][:-4].replace("_", " ")
            found.append(Figure(f"{title.capitalize()} (logged by the run)", base64.b64encode(local.read_bytes()).decode("ascii")))
    if not found:
        found.append(Figure("Images", note="the run logged no images (tracking.log_images = false)"))
    return found


def history(run_id: str, metrics: dict[str, float]) -> list[dict[str, float]]:
    """The run's per-epoch metrics (loss, val_loss, recon, penalty.*) from MLflow, one dict per
    epoch holding every such metric logged at that epoch, in the form :func:`aepipe.figures.loss_curves` reads."""
    from mlflow import MlflowClient

    client = MlflowClient()
    keys = [k for k in metrics if k in ("loss", "val_loss", "recon") or k.startswith("penalty.")]
    per_epoch: dict[int, dict[str, float]] = {}
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            per_epoch.setdefault(int(m.step), {})[key] = m.value
    complete = [k for k in keys if all(k in row for row in per_epoch.values())]
    return [{"epoch": float(step), **{k: per_epoch[step][k] for k in complete}} for step in sorted(per_epoch)]


def _curves(page: RunPage) -> Figure:
    from aepipe import figures

    rows = history(page.run_id, page.metrics)
    if not rows:
        return Figure("Training curves", note="the run logged no per-epoch metrics")
    return _attempt("Training curves", lambda: figures.loss_curves(rows, f"{page.variant} ({page.run_id[:8]}) on {page.dataset}"))


# --- the page -------------------------------------------------------------------------------


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}h3{font-size:1em}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none}th[data-type=text]{text-align:left}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}td.text{text-align:left}
td.best{background:#d8f5d0;font-weight:bold}td.near{background:#eefaea}.note{color:#8a5a00}
tr.reference td{background:#f4f4f4;color:#555;font-style:italic}
.figures{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}figure{margin:0;max-width:640px}
figcaption{font-size:13px;color:#444}figure img{width:100%;height:auto}.muted{color:#777;font-size:12px}
"""

SCRIPT = """
(function () {
  var table = document.getElementById("metrics");
  function value(cell, numeric) {
    var v = cell ? cell.getAttribute("data-value") : "";
    if (!numeric) return v || "";
    if (v === "" || v === null) return null;
    if (v === "inf") return Infinity;
    if (v === "-inf") return -Infinity;
    var n = Number(v);
    return isNaN(n) ? null : n;
  }
  function sortBy(index, descending) {
    var th = table.tHead.rows[0].cells[index];
    if (!th) return;
    var numeric = th.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a.cells[index], numeric), y = value(b.cells[index], numeric);
      if (numeric) {
        if (x === null || y === null) return (x === null) - (y === null);  // missing values last
        return descending ? y - x : x - y;
      }
      return descending ? y.localeCompare(x) : x.localeCompare(y);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
    th.addEventListener("click", function () { sortBy(index, th.getAttribute("aria-sort") === "ascending"); });
  });
  var m = /^#sort=(-?)(.+)$/.exec(window.location.hash);  // report.html#sort=-eval_probe_accuracy
  if (m) {
    var name = decodeURIComponent(m[2]);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      if (th.getAttribute("data-col") === name) sortBy(index, m[1] === "-");
    });
  }
})();
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _shown(value: float) -> str:
    return f"{value:.5g}" if math.isfinite(value) else repr(value)


#: how to read the table's reference rows and its marks (one paragraph of the page)
READING = ("<b>Reading the table.</b> A <i>reference</i> row (grey, italic) holds what real data scores against real "
           "data: the test split, which every run's samples are compared with, against as many other real rows of the "
           "same dataset (from its training and validation splits) as the runs drew samples, in the same feature space. "
           "It is the floor a perfect generator would score: FID and KID near it, precision, recall, density and "
           "coverage near its values; a run far from it is far from the data, whatever the other rows score. A row of "
           "several seeds shows the mean over them and &plusmn; the half-width of its 95% t-interval over seeds; "
           "[lo, hi] after a value is its 95% bootstrap interval over samples. The best value of each column is in "
           "bold green; a value whose interval overlaps the best one's is within noise of it (pale green, marked "
           "&asymp;): the table does not tell them apart.")


def render_html(title: str, pages: Sequence[RunPage], columns: list[str], pair: tuple[str, str] | None, front: list[str],
                pareto_figure: Figure | None, rows: Sequence[TableRow] | None = None) -> str:
    """The page: every value of the table exactly as logged in ``data-value`` (``repr``: it reads
    back as the same float; a group's mean, its interval in ``data-lo``, ``data-hi``) and rounded
    in the cell; ``sort=COLUMN`` (or ``-COLUMN``) in the URL's fragment sorts the table on load, as
    a click on the column's header does. ``rows``: the table's rows (default: one per page)."""
    from aepipe.version import __version__

    rows = list(rows) if rows is not None else table_rows(pages, group=False)
    marks = {c: best_rows(rows, c) for c in columns}
    head = "".join(f'<th data-col="{c}" data-type="text">{c.replace("_", " ")}</th>' for c in TEXT_COLUMNS)
    for c in columns:
        way = "higher" if higher_better(c) else "lower"
        head += f'<th data-col="{_e(c)}" data-type="num" data-better="{way}" title="{way} is better">{_e(c)}</th>'
    body = []
    for r in rows:
        if r.reference:
            run_cell = '<td class="text" data-col="run_id" data-value="">reference</td>'
        elif len(r.run_ids) == 1:
            run_cell = f'<td class="text" data-col="run_id" data-value="{r.run_ids[0]}"><a href="#run-{r.run_ids[0]}">{r.run_ids[0]}</a></td>'
        else:
            links = " ".join(f'<a href="#run-{i}" title="seed {_e(s)}">{i[:8]}</a>' for i, s in zip(r.run_ids, r.seeds))
            run_cell = f'<td class="text" data-col="run_id" data-value="{r.run_ids[0]}">{links}</td>'
        cells = [f'<td class="text" data-col="variant" data-value="{_e(r.label)}">{_e(r.label)}</td>',
                 f'<td class="text" data-col="dataset" data-value="{_e(r.dataset)}">{_e(r.dataset)}</td>', run_cell]
        for c in columns:
            if c not in r.metrics:
                cells.append(f'<td data-col="{_e(c)}" data-value=""></td>')
                continue
            v = r.metrics[c]
            best, near = marks[c]
            mark = ' class="best"' if r.row_id in best else ' class="near"' if r.row_id in near else ""
            shown, extra = _shown(v), ""
            if c in r.intervals:
                lo, hi, kind = r.intervals[c]
                extra = f' data-lo="{lo!r}" data-hi="{hi!r}" data-interval="{kind}"'
                shown += f" &plusmn; {(hi - lo) / 2:.2g}" if kind == "seeds" else f" [{lo:.3g}, {hi:.3g}]"
            if r.row_id in near:
                shown = "&asymp; " + shown
            cells.append(f'<td{mark} data-col="{_e(c)}" data-value="{v!r}" title="{v!r}"{extra}>{shown}</td>')
        attrs = ' class="reference" data-reference="1"' if r.reference else \
            f' data-run="{r.run_ids[0]}"' + (f' data-runs="{" ".join(r.run_ids)}" data-seeds="{_e(",".join(r.seeds))}"'
                                             if len(r.run_ids) > 1 else "")
        body.append(f'<tr{attrs}>{"".join(cells)}</tr>')
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f'<p class="muted">{len(pages)} run(s); written {time.strftime("%Y-%m-%d %H:%M:%S %Z")} by aepipe {_e(__version__)}. '
             "Best value of each column in bold green; click a header to sort.</p>",
             '<h2 id="table">Metrics</h2><div class="scroll"><table id="metrics"><thead><tr>' + head + "</tr></thead><tbody>"
             + "".join(body) + "</tbody></table></div>",
             f'<p id="reading">{READING}</p>']
    parts.append('<h2 id="pareto">Pareto plot</h2>')
    if pair and pareto_figure is not None:
        parts.append(_figure_html(pareto_figure))
        parts.append(f'<p>Non-dominated on {_e(pair[0])} and {_e(pair[1])}:</p><ul id="pareto-front">'
                     + "".join(f'<li data-run="{r}"><a href="#run-{r}">{r}</a></li>' for r in front) + "</ul>")
    else:
        parts.append('<p class="note">no two runs share a pair of metrics to plot (give one with --pareto X,Y)</p>')
    for p in pages:
        status = "" if p.status == "FINISHED" else f" &middot; {_e(p.status)}"
        seed = f" &middot; seed {_e(p.seed)}" if p.seed else ""
        parts.append(f'<section class="run" id="run-{p.run_id}"><h2>{_e(p.variant)} on {_e(p.dataset)} &middot; '
                     f"<code>{p.run_id}</code>{seed}{status}</h2>")
        parts += [f'<p class="note">{_e(n)}</p>' for n in p.notes]
        parts.append('<div class="figures">' + "".join(_figure_html(f) for f in p.figures) + "</div>")
        parts.append("</section>")
    parts.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def _figure_html(f: Figure) -> str:
    inner = f'<img alt="{_e(f.title)}" src="data:image/png;base64,{f.png}">' if f.png else ""
    note = f'<p class="note">{_e(f.note)}</p>' if f.note else ""
    return f"<figure><figcaption>{_e(f.title)}</figcaption>{inner}{note}</figure>"


# --- keeping the page in MLflow -------------------------------------------------------------


def _log(text: str, chosen: list[Any], tracker: Any) -> list[str]:
    """Log the page to each study's parent run, and, for runs not picked through a study, to a
    new ``report`` run in the experiment of the first of them; returns the runs written to."""
    written: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        path.write_text(text, encoding="utf-8")
        for parent in dict.fromkeys(p.study_run_id for p in chosen if p.study_run_id):
            tracker.open(parent).log_artifact(path, ARTIFACT_DIR)
            written.append(parent)
        loose = [p for p in chosen if not p.study_run_id]
        if loose:
            experiment = tracker.experiment_name(loose[0].run.info.experiment_id)
            ids = [p.run.info.run_id for p in loose]
            run = tracker.start(experiment, run_name="report", lease=False, tags={
                "aepipe.role": ROLE, "aepipe.report.runs": ",".join(ids),
                "mlflow.note.content": f"aepipe report of {len(ids)} run(s): artifact {ARTIFACT_DIR}/report.html"})
            try:
                run.log_artifact(path, ARTIFACT_DIR)
            except BaseException as exc:
                run.finish("FAILED", f"the report could not be stored: {exc}")
                raise
            run.finish("FINISHED")
            written.append(run.run_id)
    return written
