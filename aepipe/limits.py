"""Checks at the edge, before any work starts: sizes that cannot overflow or exhaust memory, and
output paths that can be written. Each failure is one :class:`ConfigError` line naming the
setting, option or file. Light: torch is imported only by the functions that measure a model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aepipe.errors import ConfigError

def available_bytes(device: Any) -> int | None:
    """Memory free for new tensors on ``device`` (a torch.device): the GPU's free memory, or the
    machine's available memory (Linux); None where it cannot be known."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_fits(nbytes: float, what: str, device: Any, fix: str) -> None:
    """Refuse work that needs more memory than ``device`` has free: ``what`` says what needs it,
    ``fix`` which setting or option to lower."""
    free = available_bytes(device)
    if free is not None and nbytes > free:
        raise ConfigError(f"{what} needs about {gb(nbytes)}; {gb(free)} is free on {getattr(device, 'type', device)}: {fix}")


def model_parameters(pipeline: Any, data: Any) -> dict[str, int] | None:
    """Parameters of each part of the model ``pipeline`` builds (``model.encoder``, ...),
    counted on torch's meta device: no memory is allocated however large the settings. None if
    a component cannot be built there (it reads its data while building)."""
    import torch

    from aepipe.model import build_model

    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)  # its checks read values
    try:
        with torch.device("meta"):
            model = build_model(pipeline, data)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - a component that needs real tensors to build: not measured
        return None
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)
    counts: dict[str, int] = {}
    parts = {**{c.path: getattr(model, c.path.rsplit(".", 1)[-1], None) for c in pipeline.components.values()},
             **{c.path: model.regularizers[key] for key, c in pipeline.regularizers.items()}}
    for path, part in parts.items():
        if isinstance(part, torch.nn.Module):
            counts[path] = sum(p.numel() for p in part.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def check_model_fits(pipeline: Any, data: Any, device: Any) -> None:
    """Refuse, before building it, a model whose weights, gradients and optimizer state (four
    float32 copies) and one batch's activations do not fit ``device``'s free memory."""
    counts = model_parameters(pipeline, data)
    if counts is None:
        return
    m = pipeline.settings.model
    batch = min(pipeline.settings.train.batch_size, max(1, len(data.train)))
    need = 16 * counts["total"] + 4 * 8 * batch * m.samples * (data.input_dim + m.code_dim)
    largest = max((k for k in counts if k != "total"), key=lambda k: counts[k], default="model")
    check_fits(need, f"{pipeline.source}: the model ({counts['total']:,} parameters, most in {largest})", device,
               f"lower the sizes of [{largest}] or model.code_dim")


def check_output(path: Path | None, option: str) -> None:
    """``path`` can be written: its folder exists and is writable, and it is not a folder."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{option} {path}: the folder {folder} is not writable")
