"""Helpers the tests share: models built on the CPU and pipelines trained quietly, throwaway plugin
distributions (a real dist-info with entry points), servers and signals."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_distribution(
    site: Path, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
) -> Path:
    """Write modules and ``<name>-<version>.dist-info`` (METADATA, entry_points.txt) into ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        path = site / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[aepipe]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


GOOD_PLUGIN = '''
from aepipe import hookimpl


@hookimpl
def aepipe_register_corruptions(register):
    import torch
    from pydantic import Field
    from aepipe.components import ComponentConfig, Corruption

    class FlipConfig(ComponentConfig):
        p: float = Field(0.1, ge=0.0, le=1.0)

    class Flip(Corruption):
        """Flip each pixel to 1 - x with probability p."""
        name = "flip"
        Config = FlipConfig

        def forward(self, x):
            mask = torch.rand_like(x) < self.config.p
            return torch.where(mask, 1 - x, x)

    register(Flip)


@hookimpl
def aepipe_epoch_end(run, epoch, metrics):
    return {"thirdparty.epoch_seen": float(epoch)}
'''


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc, timeout: float = 120.0, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail with the server's output (its stdout pipe, or the
    ``log`` file it writes to) if ``proc`` exits or the time runs out."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            output = log.read_text() if log is not None else proc.stdout.read()
            raise AssertionError(
                f"{url} did not answer ({'exited' if proc.poll() is not None else 'timed out'}): {output[-3000:]}"
            )
        time.sleep(1)


def sigint_at_epoch_end(at_epoch: int):
    """A plugin that sends this process Ctrl-C, as a terminal does, once epoch ``at_epoch`` ended."""
    import os
    import signal
    import types

    from aepipe import hookimpl

    plugin = types.ModuleType("sigint")

    @hookimpl
    def aepipe_epoch_end(run, epoch, metrics):
        if epoch == at_epoch:
            os.kill(os.getpid(), signal.SIGINT)

    plugin.aepipe_epoch_end = aepipe_epoch_end
    return plugin


def built(pm, path: str | Path | None = None, overrides=(), tree: dict | None = None, seed: int | None = None,
          seed_before_data: bool = False):
    """``(pipeline, model, data)``: a pipeline resolved from a file and/or a tree, its data loaded on the CPU and
    its model built. ``seed``: torch's seed, set after the data is loaded or, with ``seed_before_data``, before it
    (each test file keeps the order its figures were measured with)."""
    import torch

    from aepipe.config import resolve
    from aepipe.model import build_model
    from aepipe.training import load_data

    pipeline = resolve(pm, path, list(overrides), tree=tree)
    if seed is not None and seed_before_data:
        torch.manual_seed(seed)
    data = load_data(pipeline, torch.device("cpu"))
    if seed is not None and not seed_before_data:
        torch.manual_seed(seed)
    return pipeline, build_model(pipeline, data), data


def train_file(pm, name: str, *overrides: str, **kwargs):
    """Train ``pipelines/<name>.toml`` with the tracking kept quiet (``QUIET``) and ``overrides``."""
    from aepipe.config import resolve
    from aepipe.training import train

    from conftest import PIPELINES, QUIET

    return train(resolve(pm, PIPELINES / f"{name}.toml", [*QUIET, *overrides]), pm, **kwargs)


def eval_settings(**kw):
    """The settings of ``aepipe evaluate`` (:func:`aepipe.evaluation.run.settings`), its defaults but ``kw``."""
    from aepipe.evaluation.run import settings

    return settings(**kw)


def one_line_error(result, *parts: str) -> str:
    """The one line of a CLI result (click's ``CliRunner``) that exited 2 for a user error: it starts
    ``Error: `` and holds each of ``parts``; no traceback anywhere."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]
