"""``fid``: FID, KID, precision, recall, density and coverage between two sets of images (folders
of image files or ``.npy`` arrays), offline, in a feature space (``inception`` for figures that
compare with published ones, ``domain`` for a dataset's own classifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aepipe.errors import ConfigError, DataError
from aepipe.evaluation import DEFAULT_FEATURES
from aepipe.evaluation.generation import METRICS
from aepipe.evaluation.ladder import DESCRIPTIONS, ladder_table

__all__ = ["DEFAULT_FEATURES", "DESCRIPTIONS", "METRICS", "calibrate", "compare_image_sets", "fid", "ladder_table"]


def fid(a: str | Path, b: str | Path, features: str = DEFAULT_FEATURES, dataset: str | None = None,
        pipeline: Path | None = None, device: str = "auto", pm: Any = None) -> dict[str, Any]:
    """:func:`compare_image_sets` with the dataset of a learned space named by ``dataset`` (its
    default settings and split) or by ``pipeline``'s ``[data]`` table."""
    if dataset is not None and pipeline is not None:
        raise ConfigError("--dataset and --pipeline both name a dataset; give one")
    table = None
    if pipeline is not None:
        from aepipe.config import read_pipeline_file

        table = read_pipeline_file(pipeline).get("data", {})
    elif dataset is not None:
        table = {"name": dataset}
    return compare_image_sets(a, b, features=features, dataset=table, device=device, pm=pm)


def compare_image_sets(a: str | Path, b: str | Path, features: str = DEFAULT_FEATURES,
                       dataset: dict[str, Any] | None = None,
                       device: str = "auto", pm: Any = None, k: int = 5) -> dict[str, Any]:
    """``fid, kid, precision, recall, density, coverage`` between
    the images of ``a`` (the real ones) and ``b`` (``.npy`` arrays or folders; see
    :func:`read_images`) in feature space ``features``. A space that learns from a dataset
    (``domain``) uses the classifier of ``dataset`` (a ``[data]`` table: ``{"name": "mnist5k"}``),
    whose inputs must have the images' shape. Also returns ``n_a``, ``n_b``, ``features`` and
    ``dataset`` (its name, or None)."""
    import numpy as np

    from aepipe.components import ModelSpec
    from aepipe.evaluation.generation import feature_space, generation_metrics
    from aepipe.evaluation.image_sets import load_dataset, read_images
    from aepipe.plugins import get_plugin_manager
    from aepipe.training.device import select_device

    pm = pm or get_plugin_manager()
    cls = pm.registry.get("feature", features)  # an unknown space fails before any file is read
    x_a, x_b = read_images(a, f"A ({a})"), read_images(b, f"B ({b})")
    if x_a.shape[1:] != x_b.shape[1:]:
        raise DataError(
            f"A holds images of shape {x_a.shape[1:]}, B of shape {x_b.shape[1:]}; compare images of one shape"
        )
    try:
        dev = select_device(device)
    except ConfigError as exc:  # its message names the pipeline setting; here it is the option
        raise ConfigError(str(exc).replace("train.device:", "--device:")) from None
    shape = tuple(int(s) for s in x_a.shape[1:])
    data = None
    if cls.needs_data:
        if dataset is None:
            raise ConfigError(f"--features {features} learns from a dataset: name the one whose images these are "
                              "(--dataset NAME or --pipeline FILE)")
        data = load_dataset(dataset, dev, pm=pm)
        if data.input_dim != int(np.prod(shape)) or (data.image_shape is not None and tuple(data.image_shape) != shape):
            raise DataError(f"the images are {shape}; dataset '{data.name}' holds "
                            f"{tuple(data.image_shape) if data.image_shape else f'rows of {data.input_dim} values'}")
    # a dataset's own shape builds the space (and keys its cache); without one, the images' shape
    spec = None if data is not None else ModelSpec(input_dim=int(np.prod(shape)), code_dim=0, image_shape=shape)
    space = feature_space(features, data, dev, pm=pm, spec=spec)
    import torch

    f_a = space.features(torch.from_numpy(x_a.reshape(len(x_a), -1)))
    f_b = space.features(torch.from_numpy(x_b.reshape(len(x_b), -1)))
    out: dict[str, Any] = generation_metrics(f_a, f_b, k=k)
    out.update(n_a=len(x_a), n_b=len(x_b), features=features, dataset=data.name if data is not None else None)
    return out


def calibrate(dataset: str | dict[str, Any], features: str | None = None, n: int = 500, device: str = "auto",
              seed: int = 0, pm: Any = None, settings: dict[str, Any] | None = None, seeds: int = 1) -> dict[str, Any]:
    """The judge's ladder (:mod:`aepipe.evaluation.ladder`) for ``dataset`` (a name or a
    ``[data]`` table) in feature space ``features`` (default: :data:`DEFAULT_FEATURES`; with
    ``settings``, its ``Config``'s fields, default none):
    ``{"dataset", "features", "n", "blur_sigma", "rungs": {rung: {metric: value}}}``, every rung
    of ``n`` images scored against ``n`` held-out reference images. With ``seeds`` > 1, the
    ladder is drawn at seeds ``seed``, ``seed + 1``, ... (the reference, the rungs' images and
    their degradations; the space is the same): each figure is the mean over the draws, and
    ``"intervals"`` ``{rung: {metric: [lo, hi]}}`` its 95% t-interval over them
    (:func:`aepipe.seeds.interval`), ``"seeds"`` the seeds."""
    from aepipe.evaluation.generation import feature_space
    from aepipe.evaluation.image_sets import load_dataset
    from aepipe.evaluation.ladder import build_ladder, score_ladder
    from aepipe.plugins import get_plugin_manager
    from aepipe.training.device import select_device

    pm = pm or get_plugin_manager()
    features = features or DEFAULT_FEATURES
    pm.registry.get("feature", features)  # an unknown space fails before the data loads
    try:
        dev = select_device(device)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("train.device:", "--device:")) from None
    table = {"name": dataset} if isinstance(dataset, str) else dict(dataset)
    data = load_dataset(table, dev, pm=pm)
    space = feature_space(features, data, dev, pm=pm, settings=settings)
    draws = [seed + i for i in range(max(1, int(seeds)))]
    scored = []
    for s in draws:
        ladder = build_ladder(data, n, seed=s)
        scored.append(score_ladder(ladder, space))
    out = {"dataset": data.name, "features": features, "n": ladder.n, "blur_sigma": ladder.blur_sigma,
           "rungs": scored[0]}
    if len(draws) > 1:
        from aepipe.seeds import interval

        spans = {rung: {m: interval([sc[rung][m] for sc in scored]) for m in scored[0][rung]} for rung in scored[0]}
        out.update(rungs={rung: {m: v[0] for m, v in ms.items()} for rung, ms in spans.items()},
                   intervals={rung: {m: [v[1], v[2]] for m, v in ms.items()} for rung, ms in spans.items()},
                   seeds=draws)
    return out
