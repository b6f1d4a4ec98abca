"""``train``: one pipeline file trained as one tracked run, on this process or on ``nproc``
processes of this machine (torch.distributed through :mod:`aepipe.training.launch`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

from aepipe.errors import AepipeError, ConfigError


def is_leader() -> bool:
    """Whether this process reports for the run: under a launcher, rank 0 only."""
    return os.environ.get("RANK", "0") == "0"


def train_pipeline(pipeline: str | Path | Any | None, pm: Any = None, overrides: tuple[str, ...] | list[str] = (),
                   device: str | None = None,
                   resume: str | None = None, reporter: Callable[[int, int, dict[str, float]], None] | None = None,
                   **options: Any) -> Any:
    """Train ``pipeline`` (a TOML file with ``--set`` ``overrides``, or a pipeline
    :func:`aepipe.resolve` returned) as a new tracked run, or continue run ``resume`` from its
    checkpoint (``pipeline`` None: its own pipeline, ``overrides`` over it; only ``train.epochs``
    may rise). ``options`` go to :func:`aepipe.training.loop.train` (``tags``, ``tracker``,
    ``on_start``). Returns the :class:`~aepipe.training.loop.RunResult`.

    Example::

        import aepipe
        run = aepipe.train("pipelines/vae.toml", overrides=["train.epochs=20"])
        print(run.run_id, run.metrics["test_neg_elbo"])
    """
    pm, resolved = _prepare(pipeline, tuple(overrides), resume, pm)
    from aepipe.training.loop import train as run_training

    return run_training(resolved, pm, device=device, resume=resume, reporter=reporter,
                        overrides=tuple(overrides) if pipeline is None else (), **options)


def seed_overrides(pipeline: str | Path | None, overrides: tuple[str, ...] | list[str], seeds: int,
                   resume: str | None = None, nproc: int = 1, pm: Any = None) -> list[list[str]]:
    """The ``--set`` overrides of each of ``seeds`` runs of ``pipeline``: ``overrides`` and
    ``train.seed`` = the resolved pipeline's seed, that seed + 1, ... (the runs then share a group
    key, :mod:`aepipe.seeds`). New runs on this process only: no ``resume``, no ``nproc``."""
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager

    if resume is not None or nproc > 1:
        raise ConfigError(f"--seeds {seeds}: trains new runs on this process; it does not go with --resume or --nproc")
    if pipeline is None:
        raise ConfigError("--seeds: give a PIPELINE file to train")
    base = resolve(pm or get_plugin_manager(), Path(pipeline), tuple(overrides)).settings.train.seed
    return [[*overrides, f"train.seed={seed}"] for seed in range(base, base + seeds)]


def _prepare(pipeline: Any, overrides: tuple[str, ...], resume: str | None, pm: Any) -> tuple[Any, Any]:
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking.health import check_writable

    if pipeline is None and resume is None:
        raise ConfigError("give a PIPELINE file to train, or --resume RUN_ID to continue a run")
    pm = pm or get_plugin_manager()
    resolved = resolve(pm, Path(pipeline), overrides) if isinstance(pipeline, (str, Path)) else pipeline
    check_writable("train")
    return pm, resolved


def train_on_processes(nproc: int, pipeline: Path | None, overrides: tuple[str, ...] = (), device: str | None = None,
                       resume: str | None = None, as_json: bool = False, quiet: bool = False) -> None:
    """Run ``aepipe train`` with these options on ``nproc`` processes through
    torch.distributed.run (one machine). Ctrl-C reaches every process of the terminal's group:
    they stop together and this one waits for them; SIGTERM (a scheduler's) is passed on."""
    import signal
    import subprocess

    _prepare(pipeline, overrides, resume, None)
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("--nproc: this process was already started by a launcher (WORLD_SIZE is set); drop --nproc")
    args = [sys.executable, "-m", "aepipe.training.launch", "--standalone", f"--nproc-per-node={nproc}", "-m",
            "aepipe.cli", "train"]
    args += [str(pipeline)] if pipeline is not None else []
    for text in overrides:
        args += ["--set", text]
    for flag, value in (("--device", device), ("--resume", resume)):
        if value is not None:
            args += [flag, value]
    args += ["--json"] * as_json + ["--quiet"] * quiet
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc))),
        "LOGLEVEL": os.environ.get("LOGLEVEL", "ERROR"),
    }
    proc = subprocess.Popen(args, env=env)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        error = AepipeError(f"--nproc {nproc}: training stopped (exit {code})")
        error.exit_code = code
        error.reported = True  # each process said why already
        raise error
