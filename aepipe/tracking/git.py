"""The code a run ran: the git commit checked out where it started."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


def git_commit(cwd: str | Path = ".") -> str | None:
    """The commit checked out at ``cwd`` when this process first asked: the code it runs (a
    study's trials ask once, not once each)."""
    return _git_commit(str(Path(cwd).resolve()))


@functools.lru_cache(maxsize=8)
def _git_commit(cwd: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
