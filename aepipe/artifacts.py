"""A trained model as files that survive code changes: weights, the pipeline, what it was built for.

``aepipe-model/`` holds ``weights.pt`` (the model's ``state_dict``: tensors only),
``pipeline.toml`` (the run's resolved pipeline) and ``meta.json`` (the data it was built for and
which plugin provided each component). Loading rebuilds the model through the plugin registry and
loads the weights with ``torch.load(weights_only=True)``: a plugin may move or rename its
classes, and no class is ever unpickled. Every aepipe verb (``encode``, ``reconstruct``,
``sample``, the pyfunc model) loads models this way.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from aepipe.errors import ConfigError, RunNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.config import Pipeline
    from aepipe.model import AutoEncoder
    from aepipe.plugins import AepipePluginManager

DIR = "aepipe-model"
FORMAT = 1
DEFAULT_PARAMS = {"mode": "encode", "scaled": False, "label": -1, "n": 10, "seed": 0, "what": "code"}


def write_model_dir(
    model: AutoEncoder, pipeline: Pipeline, pm: AepipePluginManager, dst: Path, toml: str | None = None
) -> Path:
    """Write ``model`` as weights, pipeline and meta into folder ``dst``, each file atomically
    (:func:`aepipe.files.atomic_write`); ``toml``: the pipeline as TOML where the caller has it
    already (a run's, serialised once when it was assembled)."""
    from aepipe.config.stored import dump
    from aepipe.files import save_tensors, write_text

    save_tensors(dst / "weights.pt", {k: v.detach().cpu() for k, v in model.state_dict().items()})
    write_text(dst / "pipeline.toml", dump(pipeline) if toml is None else toml)
    registry = pm.registry
    components = []
    for choice in [pipeline.dataset, *pipeline.components.values(), *pipeline.regularizers.values()]:
        info = registry.source(choice.kind, choice.name)
        components.append({"path": choice.path, "kind": choice.kind, "name": choice.name, "plugin": info.name,
                           "distribution": info.dist, "version": info.version})
    meta = {"format": FORMAT, **model.meta, "components": components}
    write_text(dst / "meta.json", json.dumps(meta, indent=2))
    return dst


def load_model_dir(
    path: Path, pm: AepipePluginManager | None = None, device: str = "cpu", where: str = ""
) -> AutoEncoder:
    """Rebuild the model in folder ``path`` through the plugin registry and load its weights. A
    damaged ``weights.pt`` (empty, truncated), or a ``pipeline.toml`` beyond the bounds of a pipeline
    file, is one ConfigError naming it."""
    return load_model_and_pipeline(path, pm, device, where)[0]


def load_model_and_pipeline(
    path: Path, pm: AepipePluginManager | None = None, device: str = "cpu", where: str = ""
) -> tuple[AutoEncoder, Pipeline]:
    """:func:`load_model_dir`'s model and the stored pipeline it was built from, read and resolved
    once (its source is ``where``)."""
    from aepipe.config.stored import StoredPipeline
    from aepipe.files import load_tensors
    from aepipe.model import build_model
    from aepipe.plugins import get_plugin_manager

    where = where or str(path)
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        (path / "pipeline.toml").stat()  # read below, within the bounds of a pipeline file
    except (OSError, ValueError) as exc:
        raise RunNotFoundError(f"{where}: not an aepipe model ({exc})") from None
    stored = StoredPipeline.read(path / "pipeline.toml", f"{where}: {DIR}/pipeline.toml")
    pm = pm or get_plugin_manager()
    registry = pm.registry
    for c in meta.get("components", []):
        if c["name"] not in registry.names(c["kind"]):
            origin = f"plugin '{c['plugin']}'" + (
                f" ({c['distribution']} {c['version']})" if c.get("distribution") else ""
            )
            raise ConfigError(
                f"{where}: its {c['kind']} '{c['name']}' ({c['path']}) came from {origin}, which no longer "
                f"registers it; install that plugin to load this model"
            )
    pipeline = stored.resolve(pm)
    pipeline.source = where
    info = SimpleNamespace(input_dim=meta["input_dim"], n_classes=meta["n_classes"],
                           value_range=tuple(meta["value_range"]),
                           image_shape=tuple(meta["image_shape"]) if meta.get("image_shape") else None,
                           clip=meta.get("clip", True))
    model = build_model(pipeline, info)
    state = load_tensors(path / "weights.pt", where, f"{DIR}/weights.pt")
    if not isinstance(state, dict):
        raise ConfigError(f"{where}: {DIR}/weights.pt holds no state dict; it is damaged")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{where}: its weights no longer fit the model its components build: "
                          f"{str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), pipeline


def predict(model: AutoEncoder, model_input: np.ndarray | None, params: dict[str, Any] | None = None) -> np.ndarray:
    """What the pyfunc model serves: ``encode`` (the code), ``reconstruct`` or ``sample``
    (``n`` draws from the prior), in the dataset's raw units unless ``scaled``."""
    import torch

    from aepipe.data import scale, unscale

    p = {**DEFAULT_PARAMS, **(params or {})}
    lo, hi = model.meta["value_range"]
    label = int(p["label"])
    device = next(model.parameters()).device
    with torch.no_grad():
        if p["mode"] == "sample":
            from aepipe.sampling import check_support

            check_support(model)  # draws that are not codes of the model's kind: refused, one line
            torch.manual_seed(int(p["seed"]))
            n = int(p["n"])
            if label >= 0:
                y = torch.full((n,), label, dtype=torch.long, device=device)
            else:
                y = torch.arange(n, device=device) % model.spec.n_classes if model.spec.conditional else None
            out = model.sample(n, y).cpu().numpy()
            return out if p["scaled"] else unscale(out, (lo, hi))
        x = np.asarray(model_input, dtype=np.float64)
        x = x.reshape(len(x), -1)
        x = x.astype(np.float32) if p["scaled"] else scale(x, (lo, hi), model.meta.get("clip", True))
        xt = torch.as_tensor(x, device=device)
        y = torch.full((len(x),), label, dtype=torch.long, device=device) if label >= 0 else None
        if p["mode"] == "encode":  # the code, or what the bottleneck offers (encode --what)
            torch.manual_seed(int(p["seed"]))
            return model.represent(xt, y, str(p["what"])).cpu().numpy()
        if p["mode"] == "reconstruct":
            out = model(xt, y).cpu().numpy()
            return out if p["scaled"] else unscale(out, (lo, hi))
    raise ValueError(f"mode must be encode, reconstruct or sample, not {p['mode']!r}")
