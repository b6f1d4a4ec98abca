"""The array verbs on a stored run's model: ``encode``, ``reconstruct`` and ``sample`` (``.npy``
in, ``.npy`` out, in the dataset's raw units unless ``scaled``), and ``fit-sampler``. Every input
is checked (run id, output path, array values, labels) before the model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aepipe.errors import ConfigError


@dataclass
class Written:
    """What a verb wrote: ``count`` rows of ``what`` (shape ``shape``) to ``path``."""

    path: Path
    count: int
    what: str
    shape: tuple[int, ...]
    grid: Path | None = None


#: bytes per input value made beside the file's own: its float64 check and float32 scaled copies
INPUT_COPIES = 8 + 4
#: and more for ``reconstruct``: the float32 output, its float64 copy and the unscaled float64 values
RECONSTRUCT_COPIES = INPUT_COPIES + 4 + 8 + 8


def _inputs(run_id: str, input_path: Path, output: Path, device: str, scaled: bool, labels: Path | None,
            copies: int = INPUT_COPIES):
    """The model of ``run_id`` and its input (and labels), every one checked before the model
    loads; an input larger than this process may allocate (its header says so, with ``copies``
    bytes more per value) is refused before it is read."""
    import numpy as np
    import torch

    from aepipe.arrays import check_labels, check_rows, check_width, load_npy
    from aepipe.data import scale
    from aepipe.limits import check_output
    from aepipe.runs import load_model
    from aepipe.tracking.store import check_run_id
    from aepipe.training.device import select_device

    input_path, output, labels = Path(input_path), Path(output), None if labels is None else Path(labels)
    check_run_id(run_id)  # before any file is read
    check_output(output, "-o")
    raw = check_rows(load_npy(input_path, str(input_path), extra_per_value=copies), str(input_path))
    y_raw = load_npy(labels, f"--labels {labels}", extra_per_value=8) if labels is not None else None
    dev = select_device(device)
    model = load_model(run_id, device=str(dev))
    check_width(raw, model.meta["input_dim"], str(input_path), f"run {run_id}")
    x = raw.reshape(len(raw), -1).astype(np.float32) if scaled else scale(raw, tuple(model.meta["value_range"]),
                                                                                model.meta.get("clip", True))
    y = None
    if model.spec.conditional:
        if y_raw is None:
            raise ConfigError(f"run {run_id} is conditional: give --labels LABELS.npy")
        y = torch.as_tensor(check_labels(y_raw, f"--labels {labels}", len(x), model.spec.n_classes), device=dev)
    return model, torch.as_tensor(x, device=dev), y, raw


def encode(run_id: str, input_path: str | Path, output: str | Path, device: str = "auto", scaled: bool = False,
           labels: str | Path | None = None, what: str = "code", seed: int = 0) -> Written:
    """Encode ``input_path`` with ``run_id``'s model and write ``what`` it offers (``code``,
    ``mean``, ``sample``, ``indices``...) to ``output``."""
    import numpy as np
    import torch

    output = Path(output)
    model, x, y, _ = _inputs(run_id, input_path, output, device, scaled, labels)
    if what not in model.offers():
        raise ConfigError(f"--what {what}: run {run_id}'s bottleneck offers {', '.join(model.offers())}")
    torch.manual_seed(seed)
    with torch.no_grad():
        codes = model.represent(x, y, what).cpu().numpy()
    np.save(output, codes)
    return Written(output, len(codes), what, tuple(codes.shape))


def reconstruct(run_id: str, input_path: str | Path, output: str | Path, device: str = "auto", scaled: bool = False,
                labels: Path | None = None) -> Written:
    """Reconstruct ``input_path`` with ``run_id``'s model; ``output`` in the input's shape and units."""
    import numpy as np
    import torch

    from aepipe.data import unscale

    output = Path(output)
    model, x, y, raw = _inputs(run_id, input_path, output, device, scaled, labels, RECONSTRUCT_COPIES)
    with torch.no_grad():
        recon = model(x, y).cpu().numpy().astype(np.float64)
    out = recon if scaled else unscale(recon, tuple(model.meta["value_range"]))
    np.save(output, out.reshape(raw.shape))
    return Written(output, len(out), "reconstructions", tuple(raw.shape))


def sample(run_id: str, count: int, output: str | Path, label: int | None = None, grid: str | Path | None = None,
           seed: int = 0, device: str = "auto", scaled: bool = False, sampler: str | None = None) -> Written:
    """Draw ``count`` codes through ``run_id``'s sampler (its own, ``prior``, or one ``fit-sampler``
    logged; default: the run's own, else its prior, else N(0, I)), decode them and write them to
    ``output`` (and a PNG ``grid``)."""
    import numpy as np
    import torch

    from aepipe.data import unscale
    from aepipe.limits import check_output
    from aepipe.runs import load_model, load_sampler
    from aepipe.sampling import check_support
    from aepipe.tracking.store import check_run_id
    from aepipe.training.device import select_device

    output, grid = Path(output), None if grid is None else Path(grid)
    check_run_id(run_id)
    check_output(output, "-o")
    check_output(grid, "--grid")
    dev = select_device(device)
    model = load_model(run_id, device=str(dev))
    check_draw_count(count, model.spec.code_dim, model.meta["input_dim"], dev)
    drawn_by = load_sampler(run_id, model, sampler)
    check_support(model, drawn_by)
    classes = model.spec.n_classes
    y = None
    if label is not None:
        if not (model.spec.conditional or (model.prior is not None and model.prior.class_conditional)):
            raise ConfigError(f"--label: run {run_id} is not conditional; its samples take no label")
        if not 0 <= label < classes:
            raise ConfigError(f"--label {label}: no such class; run {run_id} has classes 0..{classes - 1}")
        y = torch.full((count,), label, dtype=torch.long, device=dev)
    elif model.spec.conditional:
        y = torch.arange(count, device=dev) % classes
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.sample(count, y, drawn_by).cpu().numpy().astype(np.float64)
    values = out if scaled else unscale(out, tuple(model.meta["value_range"]))
    shape = model.meta.get("image_shape")
    values = values.reshape(count, *shape) if shape else values
    np.save(output, values)
    if grid is not None:
        from aepipe import figures

        title = f"{count} samples of run {run_id[:8]}" + (f", class {label}" if label is not None else "")
        figures.sample_grid(out, shape, title).savefig(grid, dpi=100)
    return Written(output, count, "samples", tuple(values.shape), grid)


def check_draw_count(count: int, code_dim: int, input_dim: int, device: Any) -> None:
    """Refuse ``-n count`` where the samples would not fit what this process may allocate: the
    codes and the decoded samples (float32) on ``device``; their float32, float64 and unscaled
    float64 copies in the host's memory (:func:`aepipe.limits.memory_budget`, both on a CPU)."""
    from aepipe.limits import check_fits

    on_device, on_host = count * (code_dim + input_dim) * 4, count * input_dim * (4 + 8 + 8)
    what, fix = f"-n {count}: {count:,} samples", "draw fewer (several commands, or a smaller -n)"
    if getattr(device, "type", str(device)) == "cpu":
        check_fits(on_device + on_host, what, device, fix)
    else:
        check_fits(on_device, what, device, fix)
        check_fits(on_host, what + " copied to the host", "cpu", fix)


def fit_sampler(run_id: str, name: str, overrides: tuple[str, ...] = (), device: str = "auto") -> dict[str, Any]:
    """Fit sampler ``name`` on ``run_id``'s training codes and log it to the run; its metrics."""
    from aepipe.runs import fit_run_sampler
    from aepipe.tracking.store import check_run_id
    from aepipe.training.device import select_device

    check_run_id(run_id)
    return fit_run_sampler(run_id, name, overrides, device=str(select_device(device)))
