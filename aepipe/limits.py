"""Checks at the edge, before any work starts: sizes that cannot overflow or exhaust memory, and
output paths that can be written. Each failure is one :class:`ConfigError` line naming the
setting, option or file. Light: torch is imported only to ask a device's free memory (a model's
own size is checked by :func:`aepipe.model.check_model_fits`).
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
