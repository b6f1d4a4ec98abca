"""Checks at the edge, before any work starts: sizes that cannot overflow or exhaust memory, and
output paths that can be written. Each failure is one :class:`ConfigError` line naming the
setting, option or file. Light: torch is imported only to ask a device's free memory (a model's
own size is checked by :func:`aepipe.model.check_model_fits`).

:func:`memory_budget` is the one answer to "how much may this process still allocate": on a GPU
its free memory; on the host the least of the machine's available memory (``MemAvailable``), the
room left under the process's address-space limit (``RLIMIT_AS``, as ``ulimit -v`` or ``prlimit
--as`` set it, less the address space already mapped) and the room left in its cgroup (v2
``memory.max``, v1 ``memory.limit_in_bytes``, less what the group holds apart from inactive page
cache, which the kernel reclaims first), each with the limit that decides it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aepipe.errors import ConfigError

#: where the cgroup file systems are mounted (v2 directly, v1 one folder per controller)
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: a cgroup limit at or above this is no limit (v1 writes 9223372036854771712 for none)
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Budget:
    """``bytes`` this process may still allocate on a device and ``limit``, what decides it (the
    machine's available memory, ``RLIMIT_AS``, a cgroup's limit, a GPU's free memory); ``bytes``
    is None where nothing is known."""

    bytes: int | None
    limit: str

    def __str__(self) -> str:
        return "an unknown amount" if self.bytes is None else f"{gb(self.bytes)} ({self.limit})"


def memory_budget(device: Any = "cpu", cgroup_root: Path | None = None) -> Budget:
    """What this process may still allocate on ``device`` (a torch.device or ``"cpu"``): a GPU's
    free memory, or on the host the least of the machine's available memory, the room under
    ``RLIMIT_AS`` and the room in the process's cgroup and its ancestors (``cgroup_root``: where
    the cgroup file systems are mounted, default :data:`CGROUP_ROOT`)."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return Budget(int(torch.cuda.mem_get_info(device)[0]), f"free on {device}")
    root = CGROUP_ROOT if cgroup_root is None else Path(cgroup_root)
    found = [b for b in (_meminfo(), _address_space(), _cgroup(root)) if b is not None]
    return min(found, key=lambda b: b.bytes) if found else Budget(None, "unknown")


def available_bytes(device: Any) -> int | None:
    """Memory free for new tensors on ``device``: :func:`memory_budget`'s bytes (None where it
    cannot be known)."""
    return memory_budget(device).bytes


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _field(text: str | None, name: str) -> int | None:
    """The number after ``name`` at the start of a line of ``text`` (``/proc/meminfo``,
    ``/proc/self/status``, ``memory.stat``), in bytes (``kB`` multiplied out)."""
    for line in (text or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[0] == name and parts[1].isdigit():
            return int(parts[1]) * (1024 if parts[-1] == "kB" else 1)
    return None


def _meminfo() -> Budget | None:
    free = _field(_read(Path("/proc/meminfo")), "MemAvailable")
    return None if free is None else Budget(free, "the machine's available memory")


def _address_space() -> Budget | None:
    """The room under the soft ``RLIMIT_AS``: the limit less the address space mapped now."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    mapped = _field(_read(Path("/proc/self/status")), "VmSize") or 0
    return Budget(max(0, soft - mapped), f"under the address-space limit RLIMIT_AS of {gb(soft)}")


def _cgroup(root: Path) -> Budget | None:
    """The least room in the process's memory cgroup (v2 or v1) and its ancestors: each limit less
    what the group holds apart from inactive page cache."""
    own: dict[str, str] = {}  # controller ("" for v2, "memory" for v1) -> the process's group
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") or [""]:
                own[controller] = parts[2].strip().lstrip("/")
    best: Budget | None = None
    for top, controller, limit_file, usage_file, cache in ((root, "", "memory.max", "memory.current", "inactive_file"),
                                                           (root / "memory", "memory", "memory.limit_in_bytes",
                                                            "memory.usage_in_bytes", "total_inactive_file")):
        folder = top / own.get(controller, "")
        if not folder.is_dir():  # a container sees its own group at the mount's root
            folder = top
        while True:
            limit = (_read(folder / limit_file) or "").strip()
            if limit.isdigit() and int(limit) < _UNLIMITED:
                usage = (_read(folder / usage_file) or "").strip()
                used = (int(usage) if usage.isdigit() else 0) - (_field(_read(folder / "memory.stat"), cache) or 0)
                room = Budget(
                    max(0, int(limit) - max(0, used)), f"in the cgroup limit {folder / limit_file} of {gb(int(limit))}"
                )
                best = room if best is None or room.bytes < best.bytes else best
            if folder == top or top not in folder.parents:
                break
            folder = folder.parent
    return best


def gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_fits(nbytes: float, what: str, device: Any, fix: str) -> None:
    """Refuse work that needs more memory than ``device`` has free: ``what`` says what needs it,
    ``fix`` which setting or option to lower."""
    budget = memory_budget(device)
    if budget.bytes is not None and nbytes > budget.bytes:
        raise ConfigError(
            f"{what} needs about {gb(nbytes)}; {gb(budget.bytes)} is free on {getattr(device, 'type', device)} "
            f"({budget.limit}): {fix}"
        )


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
