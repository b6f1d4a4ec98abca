"""The report's figures of one run: drawn from its logged model and its own data split
(reconstructions, samples through every sampler, interpolations, a latent map), else the images
the run logged itself; and its training curves. One figure failing becomes a note, never stops the page."""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Any, Callable

from aepipe.errors import AepipeError, RunNotFoundError
from aepipe.evaluation.report.table import Figure, RunPage

LATENT_POINTS = 2000
DPI = 80


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), dpi=100)


def png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _attempt(title: str, draw: Callable[[], Any]) -> Figure:
    """``draw()``'s figure, or a note saying why it could not be drawn (a component that cannot
    sample, say): one figure failing never stops the page."""
    try:
        return Figure(title, png(draw()))
    except Exception as exc:  # noqa: BLE001 - any component's failure becomes a visible note
        line = str(exc).splitlines()[0][:300] if str(exc) else ""
        return Figure(title, note=f"not drawn: {type(exc).__name__}: {line}")


def run_figures(page: RunPage, device: Any, tracker: Any, pm: Any, data_cache: dict[str, Any]) -> list[Figure]:
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
    key = "\n".join(
        [pipeline.dataset.name, pipeline.dataset.config.model_dump_json(), pipeline.settings.data.model_dump_json()]
    )
    if key not in cache:
        cache[key] = load_data(pipeline, device)
    return cache[key]


def _model_figures(page: RunPage, model: Any, data: Any, tracker: Any, pm: Any) -> list[Figure]:
    import torch

    from aepipe import figures
    from aepipe.training.metrics import codes

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
        out.append(
            _attempt(
                f"Samples through {label}",
                lambda s=sampler_name, label=label: _samples(page.run_id, model, s, label, name, shape, tracker, pm),
            )
        )
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


def _samples(
    run_id: str, model: Any, sampler_name: str | None, label: str, name: str, shape: Any, tracker: Any, pm: Any
):
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
    return figures.sample_grid(
        images, shape, f"{name}: samples through {label}" + (", one row per class" if rows else ""), rows
    )


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
            found.append(
                Figure(
                    f"{title.capitalize()} (logged by the run)", base64.b64encode(local.read_bytes()).decode("ascii")
                )
            )
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
    return _attempt(
        "Training curves", lambda: figures.loss_curves(rows, f"{page.variant} ({page.run_id[:8]}) on {page.dataset}")
    )
