"""What a run records besides its metrics: tags, parameters, the pipeline, the dataset, figures
and the model, all through the run's tracker."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from aepipe.config import Pipeline, TrackingSettings
from aepipe.context import RunContext
from aepipe.errors import ConfigError
from aepipe.training.evaluate import codes, prior_samples

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.plugins import AepipePluginManager


def tags(p: Pipeline, pm: AepipePluginManager, device: torch.device) -> dict[str, str]:
    from aepipe import __version__
    from aepipe.tracking import git_commit

    out = {
        "aepipe.variant": p.variant,
        "aepipe.version": __version__,
        "aepipe.dataset": p.dataset.name,
        "aepipe.pipeline": p.source,
        "aepipe.device": str(device),
        "mlflow.source.name": "aepipe train",
    }
    registry = pm.registry
    sources = [registry.source("variant", p.settings.variant)] if p.settings.variant else []
    sources += [registry.source(c.kind, c.name) for c in [p.dataset, *p.components.values(), *p.regularizers.values()]]
    for info in sources:
        out[f"aepipe.plugin.{info.dist or info.name}"] = info.version or "unversioned"
    commit = git_commit()
    if commit:
        out["mlflow.source.git.commit"] = commit
    return out


def system_metrics(s: TrackingSettings) -> float | bool:
    """MLflow's system metrics: False, True (MLflow's interval: 10 s or
    MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL), or the pipeline's interval in seconds."""
    if not s.system_metrics:
        return False
    try:
        import psutil  # noqa: F401 - MLflow's system metrics need it
    except ImportError:
        raise ConfigError("tracking.system_metrics = true needs psutil: pip install 'aepipe[gpu]'") from None
    return s.system_metrics_interval or True


def log_start(run: RunContext) -> None:
    """The run's parameters (dotted keys), its resolved pipeline and its training data."""
    p = run.config
    run.tracked.log_params(p.flat())
    run.tracked.log_text(p.to_toml(), "pipeline.toml")
    if p.settings.tracking.log_dataset:
        d = run.data
        run.tracked.log_dataset(d.name, d.x_train.cpu().numpy(), None if d.y_train is None else d.y_train.cpu().numpy())


def log_end(run: RunContext, pm: AepipePluginManager) -> None:
    """Figures of the trained model, and the model itself (weights, pipeline and pyfunc)."""
    s = run.config.settings.tracking
    run.model.eval()
    if s.log_images:
        _figures(run)
    if s.log_model:
        _model(run, pm, s.pytorch_flavor)


@torch.no_grad()
def _figures(run: RunContext) -> None:
    from aepipe import figures

    model, data, name = run.model, run.data, run.config.variant
    x = data.x_test[:20]
    y = data.y_test[:20] if data.y_test is not None else None
    recon = model(x, y).cpu().numpy()
    title = f"{name} on {data.name}: test inputs (rows 1, 3) and reconstructions (rows 2, 4)"
    run.log_figure(figures.reconstruction_grid(x.cpu().numpy(), recon, data.image_shape, title), "images/reconstructions.png")
    if run.history:
        run.log_figure(figures.loss_curves(run.history, f"{name} on {data.name}"), "images/loss_curves.png")
    labels = None if data.y_test is None else data.y_test.cpu().numpy()
    run.log_figure(figures.latent_scatter(codes(model, data.x_test, data.y_test), labels, f"{name} on {data.name}: test codes"),
                   "images/latent.png")
    if model.prior is not None:
        images, rows = prior_samples(model)
        title = f"{name}: samples from the prior" + (", one row per class" if rows else "")
        run.log_figure(figures.sample_grid(images, data.image_shape, title, rows), "images/samples.png")


def _model(run: RunContext, pm: AepipePluginManager, pytorch_flavor: bool) -> None:
    from aepipe import __version__
    from aepipe.artifacts import DIR, predict, write_model_dir

    model = run.model
    conditional = model.spec.conditional
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"aepipe=={__version__}"]
    example = run.data.x_test[:5]
    lo, hi = model.meta["value_range"]
    raw = lo + example.cpu().numpy().astype(np.float64) * (hi - lo)
    # a conditional model needs a class to encode: the example uses class 0
    pyfunc = {"raw": raw, "output": predict(model, raw, {"label": 0} if conditional else None),
              "requirements": requirements, "conditional": conditional}
    torch_model = None
    if pytorch_flavor:
        cpu_model = copy.deepcopy(model).cpu().eval()
        with torch.no_grad():
            out = cpu_model(example.cpu(), run.data.y_test[:5].cpu() if conditional else None)
        torch_model = {"model": cpu_model, "example": example.cpu().numpy(), "output": out.numpy(),
                       "requirements": requirements, "conditional": conditional}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_model_dir(model, run.config, pm, Path(tmp) / DIR)
        run.tracked.log_model(folder, pyfunc, torch_model)
