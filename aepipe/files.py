"""Files aepipe writes and reads back: written whole or not at all, read back safely.

:func:`atomic_write` is the one way aepipe writes a file it will read again (checkpoints, model
files): into a temporary file in the same folder, flushed and fsynced, then renamed over the
target, so that a crash or a kill at any moment leaves either the old file or the new one. On
any failure the temporary file is removed; a full disk is one :class:`~aepipe.errors.WriteError`
naming the file and the space left. :func:`load_tensors` reads a file written by ``torch.save``
with ``weights_only=True``; a damaged file of any size (empty, truncated, garbled) is one
:class:`~aepipe.errors.ConfigError` naming it, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from aepipe.errors import ConfigError, WriteError

#: the suffix of atomic_write's temporary files: ``.NAME.RANDOM.tmp`` next to ``NAME``
PARTIAL_SUFFIX = ".tmp"
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def size_text(n: float) -> str:
    """``n`` bytes, for a person: ``512 bytes``, ``1.5 MB``, ``2.1 GB``."""
    if n < 1000:
        return f"{int(n)} bytes"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("PB", 1e15), ("EB", 1e18)):
        if n < scale * 1000 or unit == "EB":
            return f"{n / scale:.3g} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def free_space(folder: Path) -> int | None:
    """Bytes free for this user in ``folder``'s file system; None where it cannot be known."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _oserror(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, or one in its chain (``torch.save`` turns the
    OSError its file object raised into a RuntimeError raised while handling it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def write_error(path: Path, exc: BaseException, written: int = 0) -> WriteError | None:
    """One line for a failed write of ``path``, where an OSError lies behind ``exc``; None
    otherwise (the caller re-raises ``exc``)."""
    os_error = _oserror(exc)
    if os_error is None:
        return None
    if os_error.errno in _FULL:
        free = free_space(path.parent)
        left = "unknown space" if free is None else size_text(free)
        so_far = f"; {size_text(written)} of it had been written" if written else ""
        return WriteError(
            f"could not write {path}: no space left on the device ({left} free in {path.parent}{so_far}); "
            "free some space and run the command again"
        )
    return WriteError(f"could not write {path}: {os_error.strerror or os_error}")


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file in the same folder that
    replaces ``path`` (fsynced, renamed, the folder fsynced) only when the block ends without an
    error. On any error, KeyboardInterrupt included, the temporary file is removed and ``path``
    is left as it was; an OSError (a full disk, a read-only folder) becomes one WriteError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        written = _size(tmp)
        with contextlib.suppress(OSError):
            tmp.unlink()
        error = write_error(path, exc, written) if isinstance(exc, Exception) else None
        if error is None:
            raise
        raise error from None
    _fsync_folder(path.parent)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(data)
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return write_bytes(path, text.encode("utf-8"))


def save_tensors(path: Path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    import torch

    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def remove_partial(folder: Path) -> list[Path]:
    """Remove the temporary files that writers killed outright (SIGKILL, a power cut) left in
    ``folder``; only call it on a folder no live process writes. Returns what it removed."""
    removed = []
    try:
        candidates = list(Path(folder).glob(f".*{PARTIAL_SUFFIX}"))
    except OSError:
        return removed
    for path in candidates:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a system without directory handles skips it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- reading back ------------------------------------------------------------------------------


def load_tensors(path: Path, where: str, name: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU. A file that holds more than tensors
    and plain data (a pickled object: it could run code) is refused; an empty, truncated or
    otherwise damaged one is said to be so. Either way one ConfigError that starts with
    ``where`` and names the file (``name``, default its path), whatever torch raised."""
    import torch

    size, shown = _size(path), name or str(path)
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it reads anyway: not the user's concern
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _is_pickle(path):  # a plain pickle, or torch's format with a class inside: refused
            raise ConfigError(f"{where}: {shown} holds more than tensors and plain data; refusing to load it "
                              f"({_refusal(exc)})") from None
        raise ConfigError(f"{where}: {shown} is damaged ({_damage(size, exc)}); it cannot be read") from None
    except FileNotFoundError:
        raise ConfigError(f"{where}: {shown} is missing") from None
    except PermissionError as exc:
        raise ConfigError(f"{where}: {shown} cannot be read: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, OSError, EOFError, KeyError, UnicodeDecodeError... for a damaged file
        raise ConfigError(f"{where}: {shown} is damaged ({_damage(size, exc)}); it cannot be read") from None


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` is whole enough to be refused for what it holds: a zip archive (torch's
    format) or a pickle stream that starts as one (protocol 2 or later)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and head[1] in range(2, 6))


def _refusal(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused (its message goes on to suggest turning the
    check off, which aepipe never does)."""
    text = " ".join(str(exc).split())
    _, found, detail = text.partition("WeightsUnpickler error:")
    detail = detail.strip() if found else ""
    detail = detail.split(" was not an allowed global")[0].split(". ")[0]
    return (detail or "an object that is not a tensor")[:200]


def _damage(size: int, exc: BaseException) -> str:
    """The file's size and what torch met, in a few words: never torch's advice to load it with
    ``weights_only=False``."""
    if size == 0:
        return "empty: 0 bytes"
    text = " ".join(str(exc).split()).split(". This is an internal")[0]
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text:
        text = "not a file torch wrote"
    return f"{size_text(size)}: {type(exc).__name__}" + (f": {text[:160]}" if text else "")
