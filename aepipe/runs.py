"""A finished run read back from the store: its model, and the samplers fitted on its training
codes (``samplers/NAME/``: ``weights.pt``, its tensors only, and ``sampler.toml``, its settings;
never pickled code). What every verb that starts from a run id (``encode``, ``sample``,
``fit-sampler``, ``evaluate``, ``report``) loads through."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aepipe.errors import ConfigError, RunNotFoundError
from aepipe.sampling import FOLDER

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.model import AutoEncoder
    from aepipe.plugins import AepipePluginManager


def load_model(
    run_id: str, device: str = "cpu", tracker: Any = None, pm: AepipePluginManager | None = None
) -> AutoEncoder:
    """Run ``run_id``'s trained model, rebuilt from its logged weights and pipeline."""
    from aepipe.artifacts import DIR, load_model_dir
    from aepipe.tracking import default_tracker
    from aepipe.tracking.lookup import missing_artifact
    from aepipe.tracking.store import check_run_id

    check_run_id(run_id, "run")
    tracker = tracker or default_tracker()
    record = tracker.get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = tracker.download(run_id, DIR, Path(tmp))
        if local is None:  # say which: missing files (named), no model logged, or an unfinished run
            location = tracker.artifact_location(run_id) if hasattr(tracker, "artifact_location") else None
            raise RunNotFoundError(missing_artifact(record, DIR, location))
        return load_model_dir(local, pm, device, where=f"run {run_id}")


def fit_run_sampler(run_id: str, name: str, overrides: tuple[str, ...] = (), device: str = "cpu", tracker: Any = None,
                    pm: Any = None) -> dict[str, float]:
    """Fit sampler ``name`` (``--set`` overrides of its settings, ``key=value``) on run
    ``run_id``'s training codes and log it to the run; returns the fit's metrics."""
    import torch

    from aepipe.config import parse_override
    from aepipe.config.stored import read_stored_file
    from aepipe.plugins import get_plugin_manager
    from aepipe.sampling import build_sampler
    from aepipe.tracking import default_tracker
    from aepipe.training.metrics import fit_on_codes
    from aepipe.training.setup import load_data

    pm = pm or get_plugin_manager()
    tracker = tracker or default_tracker()
    settings: dict[str, Any] = {}
    for text in overrides:
        settings.update(parse_override(text))
    model = load_model(run_id, device=device, tracker=tracker, pm=pm)
    sampler = build_sampler(model, name, settings, pm)
    with tempfile.TemporaryDirectory() as tmp:
        found = tracker.download(run_id, "aepipe-model/pipeline.toml", Path(tmp))
        if found is None:
            raise RunNotFoundError(f"run {run_id}: its model's pipeline.toml is missing")
        pipeline = read_stored_file(pm, found, f"run {run_id}: aepipe-model/pipeline.toml")
    data = load_data(pipeline, torch.device(device))  # the same split: data.split_seed is the run's
    metrics = fit_on_codes(model, sampler, data.train)
    _log(run_id, name, sampler, tracker)
    return metrics


def _log(run_id: str, name: str, sampler: Any, tracker: Any) -> None:
    import tomli_w
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        torch.save({k: v.detach().cpu() for k, v in sampler.state_dict().items()}, folder / "weights.pt")
        (folder / "sampler.toml").write_text(
            tomli_w.dumps({"name": name, **sampler.config.model_dump(exclude_none=True)}), encoding="utf-8"
        )
        run = tracker.open(run_id)
        for file in sorted(folder.iterdir()):
            run.log_artifact(file, f"{FOLDER}/{name}")


def load_sampler(
    run_id: str, model: AutoEncoder, name: str | None, tracker: Any = None, pm: Any = None, fit_on: Any = None
) -> Any:
    """The sampler ``name`` of run ``run_id``: the model's own (``[model.sampler]``), ``prior``
    (always), or one that ``fit-sampler`` logged; None (``name`` None): the model's default. A
    sampler the run does not hold is fitted on split ``fit_on`` when one is given (not logged)."""
    import torch

    from aepipe.config.reading import loads_pipeline, read_text
    from aepipe.sampling import build_sampler
    from aepipe.tracking import default_tracker

    if name is None:
        return None
    if model.sampler is not None and model.sampler.name == name:
        return model.sampler
    if name == "prior":
        return build_sampler(model, "prior", pm=pm)
    from aepipe.plugins import get_plugin_manager

    pm = pm or get_plugin_manager()
    try:  # a registered name before any path is built from it
        pm.registry.get("sampler", name)
    except ConfigError as exc:
        raise ConfigError(f"--sampler: {exc}") from None
    tracker = tracker or default_tracker()
    with tempfile.TemporaryDirectory() as tmp:
        folder = tracker.download(run_id, f"{FOLDER}/{name}", Path(tmp))
        if folder is None:
            if fit_on is not None:  # fitted here, for this call only (aepipe evaluate --sampler)
                from aepipe.training.metrics import fit_on_codes

                sampler = build_sampler(model, name, pm=pm)
                fit_on_codes(model, sampler, fit_on)
                return sampler
            raise ConfigError(f"run {run_id} has no fitted sampler '{name}'; fit one with: aepipe fit-sampler {run_id} "
                              f"--sampler {name}")
        # its settings read within the bounds of a pipeline file: a damaged or hostile copy is one line naming it
        where = f"run {run_id}: {FOLDER}/{name}/sampler.toml"
        settings = loads_pipeline(read_text(folder / "sampler.toml", where), where)
        try:
            state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged file of any kind
            raise ConfigError(
                f"run {run_id}: sampler '{name}' is damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            ) from None
        settings.pop("name", None)
        sampler = build_sampler(model, name, settings, pm)
        try:
            sampler.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(
                f"run {run_id}: sampler '{name}' no longer fits its class: {str(exc).splitlines()[0]}"
            ) from None
        return sampler.to(next(model.parameters()).device)
