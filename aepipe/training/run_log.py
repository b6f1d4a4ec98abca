"""What a run records besides its metrics: tags, parameters, the pipeline, the dataset, figures
and the model, all through the run's tracker."""

from __future__ import annotations

import copy
import functools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from aepipe.config import Pipeline, TrackingSettings
from aepipe.context import RunContext
from aepipe.data import DataBundle, unscale
from aepipe.errors import ConfigError
from aepipe.training.metrics import codes, prior_samples

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.plugins import AepipePluginManager

#: test codes drawn in the latent figure, and training rows MLflow profiles of a streamed dataset
SCATTER_POINTS = 10_000
STREAMED_PROFILE_ROWS = 10_000


def tags(p: Pipeline, pm: AepipePluginManager, device: torch.device, data: DataBundle | None = None) -> dict[str, str]:
    from aepipe.version import __version__
    from aepipe.tracking import git_commit

    out = {
        "aepipe.variant": p.variant,
        "aepipe.version": __version__,
        "aepipe.dataset": p.dataset.name,
        "aepipe.pipeline": p.source,
        "aepipe.device": str(device),
        "mlflow.source.name": "aepipe train",
    }
    if data is not None:  # held or streamed (data.in_memory), and why
        out["aepipe.data.path"] = "streamed" if data.streamed else "memory"
        out["aepipe.data.reason"] = data.reason
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


def log_start(run: RunContext, dataset: bool = True) -> None:
    """The run's parameters (dotted keys), its seed and group tags, its resolved pipeline and (``dataset``) its
    training data."""
    from aepipe.seeds import seed_tags

    p = run.config
    flat = p.flat()
    run.tracked.log_params(flat)
    run.tracked.set_tags(seed_tags(flat))  # runs of this pipeline over seeds: one group (aepipe.seeds)
    # the TOML the run was assembled with (and its checkpoint holds)
    run.tracked.log_text(run.state.pipeline, "pipeline.toml")
    if dataset:
        _dataset(run)


def _dataset(run: RunContext) -> None:
    """MLflow's digest and profile of the training rows as kept (``tracking.log_dataset``)."""
    if run.config.settings.tracking.log_dataset:
        train = run.data.train
        limit = STREAMED_PROFILE_ROWS if train.streamed else None  # a streamed split is not read whole for this
        y = None if train.y is None else train.y[:limit].cpu().numpy()
        run.tracked.log_dataset(run.data.name, train.stored(limit), y)


def log_end(run: RunContext, pm: AepipePluginManager, dataset: bool = False) -> None:
    """Figures of the trained model, and the model itself (weights, pipeline and pyfunc); with
    ``dataset``, the training data too (a run that did not log it when it started)."""
    s = run.config.settings.tracking
    run.model.eval()
    if dataset:
        _dataset(run)
    if s.log_images:
        _figures(run)
    if s.log_model:
        _model(run, pm, s.pytorch_flavor)


@torch.no_grad()
def _figures(run: RunContext) -> None:
    from aepipe import figures

    model, data, name = run.model, run.data, run.config.variant
    x, y = data.test.head(20)
    recon = model(x, y).cpu().numpy()
    title = f"{name} on {data.name}: test inputs (rows 1, 3) and reconstructions (rows 2, 4)"
    run.log_figure(
        figures.reconstruction_grid(x.cpu().numpy(), recon, data.image_shape, title), "images/reconstructions.png"
    )
    if run.history:
        run.log_figure(figures.loss_curves(run.history, f"{name} on {data.name}"), "images/loss_curves.png")
    x, y = data.test.head(SCATTER_POINTS)
    labels = None if y is None else y.cpu().numpy()
    groups = [group for group, _ in model.spec.groups]  # a hierarchy's map is of the joint code: say so
    which = f"test codes (joint: {', '.join(groups)})" if groups else "test codes"
    run.log_figure(figures.latent_scatter(codes(model, x, y), labels, f"{name} on {data.name}: {which}"),
                   "images/latent.png")
    if model.prior is not None or model.sampler is not None or not model.spec.conditional:
        images, rows = prior_samples(model)
        source = (f"sampler '{model.sampler.name}'" if model.sampler is not None
                  else "the prior" if model.prior is not None else "N(0, I)")
        title = f"{name}: samples through {source}" + (f" (joint: {', '.join(groups)})" if groups else "") \
            + (", one row per class" if rows else "")
        run.log_figure(figures.sample_grid(images, data.image_shape, title, rows), "images/samples.png")


def _log_pyfunc(model_dir: Path, **example) -> None:
    """The pyfunc flavour, logged by a tracker that keeps MLflow models (imports MLflow when called)."""
    from aepipe.serving import log_pyfunc

    log_pyfunc(model_dir, **example)


def _model(run: RunContext, pm: AepipePluginManager, pytorch_flavor: bool) -> None:
    from aepipe.version import __version__
    from aepipe.artifacts import DIR, predict, write_model_dir

    model = run.model
    conditional = model.spec.conditional
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"aepipe=={__version__}"]
    example, example_y = run.data.test.head(5)
    lo, hi = model.meta["value_range"]
    raw = unscale(example.cpu().numpy().astype(np.float64), (lo, hi))
    # a conditional model needs a class to encode: the example uses class 0
    pyfunc = functools.partial(_log_pyfunc, raw=raw, output=predict(model, raw, {"label": 0} if conditional else None),
                               requirements=requirements, conditional=conditional)
    torch_model = None
    if pytorch_flavor:
        cpu_model = copy.deepcopy(model).cpu().eval()
        with torch.no_grad():
            out = cpu_model(example.cpu(), example_y.cpu() if conditional else None)
        torch_model = {"model": cpu_model, "example": example.cpu().numpy(), "output": out.numpy(),
                       "requirements": requirements, "conditional": conditional}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_model_dir(model, run.config, pm, Path(tmp) / DIR, toml=run.state.pipeline)
        run.tracked.log_model(folder, pyfunc, torch_model)
