"""The report's page: the table, the reading note, the Pareto plot and each run's figures, written
into the page template (``page.html``, a package resource holding the style and the sorting script),
so that everything is inside one file."""

from __future__ import annotations

import html
import math
import time
from functools import cache
from importlib import resources
from typing import Any, Sequence

from aepipe.evaluation.report.table import Figure, RunPage, TableRow, best_rows, higher_better, table_rows

TEXT_COLUMNS = ("variant", "dataset", "run_id")
#: where the page template takes the title and the body
TITLE, BODY = "<!--aepipe:title-->", "<!--aepipe:body-->"


@cache
def template() -> tuple[str, str, str]:
    """The page template (``page.html`` beside this module), cut at its title and its body."""
    text = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    before, rest = text.split(TITLE)
    middle, after = rest.split(BODY)
    return before, middle, after


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _rounded(value: float) -> str:
    return f"{value:.5g}" if math.isfinite(value) else repr(value)


#: how to read the table's reference rows and its marks (one paragraph of the page)
READING = ("<b>Reading the table.</b> A <i>reference</i> row (grey, italic) holds what real data scores against real "
           "data: the test split, which every run's samples are compared with, against as many other real rows of the "
           "same dataset (from its training and validation splits) as the runs drew samples, in the same feature "
           "space. It is the floor a perfect generator would score: FID and KID near it, precision, recall, density "
           "and coverage near its values; a run far from it is far from the data, whatever the other rows score. A row "
           "of several seeds shows the mean over them and &plusmn; the half-width of its 95% t-interval over seeds; "
           "[lo, hi] after a value is its 95% bootstrap interval over samples. The best value of each column is in "
           "bold green; a value whose interval overlaps the best one's is within noise of it (pale green, marked "
           "&asymp;): the table does not tell them apart.")


def render_html(title: str, pages: Sequence[RunPage], columns: list[str], pair: tuple[str, str] | None,
                front: list[str], pareto_figure: Figure | None, rows: Sequence[TableRow] | None = None) -> str:
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
            run_cell = (f'<td class="text" data-col="run_id" data-value="{r.run_ids[0]}"><a '
                        f'href="#run-{r.run_ids[0]}">{r.run_ids[0]}</a></td>')
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
            shown, extra = _rounded(v), ""
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
    parts = [f"<h1>{_e(title)}</h1>",
             f'<p class="muted">{len(pages)} run(s); written {time.strftime("%Y-%m-%d %H:%M:%S %Z")} by aepipe '
             f'{_e(__version__)}. '
             "Best value of each column in bold green; click a header to sort.</p>",
             '<h2 id="table">Metrics</h2><div class="scroll"><table id="metrics"><thead><tr>' + head
             + "</tr></thead><tbody>"
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
    before, middle, after = template()
    return before + _e(title) + middle + "\n".join(parts) + after


def _figure_html(f: Figure) -> str:
    inner = f'<img alt="{_e(f.title)}" src="data:image/png;base64,{f.png}">' if f.png else ""
    note = f'<p class="note">{_e(f.note)}</p>' if f.note else ""
    return f"<figure><figcaption>{_e(f.title)}</figcaption>{inner}{note}</figure>"
