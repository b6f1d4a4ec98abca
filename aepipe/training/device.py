"""Devices: which one, autocast, cuDNN and torch.compile, seeds."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from aepipe.errors import ConfigError
from aepipe.model import AutoEncoder


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else Apple's MPS, else CPU; otherwise the named device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"train.device: '{name}' is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: '{name}' asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: '{name}' asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device: '{name}' asked for, but MPS is not available here")
    return device


def autocast(device: torch.device, amp: str):
    """The forward pass's autocast context: bf16 on CUDA when asked (where it is safe: matrix
    products in bf16, losses and reductions in float32 by autocast's own policy); otherwise a
    no-op. On CPU and MPS ``amp = "bf16"`` is ignored: it would be slower there."""
    if amp == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


#: the optimizers whose step CUDA graphs can capture (``capturable=True``, a tensor learning rate)
CAPTURABLE = ("adam", "adamw")


def check_cuda_graphs(pipeline: Any, device: torch.device, several: bool) -> None:
    """Refuse ``train.cuda_graphs = true`` in one line where it cannot run: off CUDA, on several
    processes, with an optimizer whose step cannot be captured, or with torch.compile."""
    s = pipeline.settings.train
    if not s.cuda_graphs:
        return
    where = f"{pipeline.source}: train.cuda_graphs = true"
    if device.type != "cuda":
        raise ConfigError(f"{where} needs a CUDA device; this run is on {device} (set train.cuda_graphs = false)")
    if several:
        raise ConfigError(f"{where} trains on one process; this run has several")
    if s.optimizer not in CAPTURABLE:
        raise ConfigError(f"{where} captures the step of {' or '.join(CAPTURABLE)}; train.optimizer is '{s.optimizer}'")
    if s.compile:
        raise ConfigError(f"{where} and train.compile = true: choose one")


def prepare_for_device(model: AutoEncoder, device: torch.device, compile_model: bool) -> AutoEncoder:
    """cuDNN autotuning for convolutional models on CUDA, and optional torch.compile of the
    encoder and decoder (in place, so the model pickles as itself)."""
    if device.type == "cuda" and any(
        isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules()
    ):
        torch.backends.cudnn.benchmark = True
    if compile_model:
        model.encoder.compile()
        model.decoder.compile()
    return model


@contextlib.contextmanager
def one_cpu_thread(device: torch.device | None = None):
    """Run a block on one CPU thread (nothing changes on another device), then restore the
    thread count: small networks gain nothing from more, and on a busy machine threads that
    wait for each other cost many times the work (training: up to 15x slower with two threads on
    two shared cores)."""
    if device is not None and device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds every CUDA device too
    np.random.seed(seed % 2**32)
