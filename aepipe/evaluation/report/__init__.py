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

This module chooses the runs and puts the page together; each part has its own module:
:mod:`.table` (the rows, columns and best values), :mod:`.pareto` (the Pareto plot),
:mod:`.figures` (a run's figures), :mod:`.page` (the HTML, written into the template ``page.html``,
a package resource) and :mod:`.publish` (keeping the page in MLflow).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from aepipe.errors import ConfigError, RunNotFoundError
from aepipe.evaluation.report.figures import run_figures
from aepipe.evaluation.report.page import render_html
from aepipe.evaluation.report.pareto import choose_pareto, parse_pareto, pareto_figure, pareto_front
from aepipe.evaluation.report.publish import ARTIFACT_DIR, publish
from aepipe.evaluation.report.table import RunPage, TableRow, metric_columns, table_rows


def build_report(targets: Sequence[str], output: Path, experiments: Sequence[str] = (), pareto: str | None = None,
                 device: str = "auto", log: bool = True, echo: Callable[[str], None] | None = None,
                 pm: Any = None, group: bool = True, references: bool = True) -> Path:
    """Write the report of ``targets`` (run ids, study names: every finished trial, experiment
    names: the latest finished run of each variant; none: the latest of each variant in
    ``experiments``) to ``output`` and, with ``log``, keep it in MLflow (see the module's
    docstring). ``pareto``: ``"X,Y"``, two metrics to plot against each other (default: the
    first of :data:`~aepipe.evaluation.report.pareto.PARETO_PAIRS` that two runs have). ``group``: runs that differ
    only in their
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
    wanted = parse_pareto(pareto)
    if log:
        from aepipe.tracking.health import check_writable

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

    pages = [RunPage(p.run.info.run_id, p.run.data.tags.get("aepipe.variant", ""),
                     p.run.data.tags.get("aepipe.dataset", ""),
                     p.run.info.status, dict(p.run.data.metrics), p.study, group=run_group(p.run)[0],
                     seed=run_group(p.run)[1])
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
        page.figures = run_figures(page, dev, tracker, pm, data_cache)
        echo(f"run {page.run_id} ({page.variant}): {len(page.figures)} figures in {time.perf_counter() - started:.1f}s "
             f"[{i}/{len(pages)}]")
    front = pareto_front(pages, pair) if pair else []
    plot = pareto_figure(pages, pair, front) if pair else None
    title = "aepipe report: " + (", ".join(targets) if targets else ", ".join(experiments) or "latest runs")
    text = render_html(title, pages, columns, pair, front, plot, rows)
    write_text(output, text)
    if log:
        for where in publish(text, chosen, tracker):
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
