"""The sets ``aepipe fid`` and the reference rows compare: images from a ``.npy`` file or a
folder of image files, and a dataset's split from its ``[data]`` table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aepipe.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.data import DataBundle

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_images(path: str | Path, what: str) -> np.ndarray:
    """Images ``(N, C, H, W)`` float32 in [0, 1] from a ``.npy`` array (values in [0, 1], shaped
    ``(N, C, H, W)`` or ``(N, H, W)``) or a folder of image files (PNG, JPEG..., searched
    recursively, one size; 8-bit values / 255; greyscale files give one channel, else RGB).
    ``what`` names the input in the one-line :class:`aepipe.errors.DataError` of a bad one."""
    from aepipe.arrays import check_values, load_npy
    from aepipe.errors import DataError

    path = Path(path)
    if path.is_dir():
        return _read_folder(path, what)
    if not path.exists():
        raise DataError(f"{what}: {path} does not exist (give a .npy array or a folder of images)")
    x = check_values(load_npy(path, what), what, min_ndim=1)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{what}: an array of shape {x.shape}; expected images (N, C, H, W) or (N, H, W)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = "; divide 8-bit values by 255" if hi <= 255 and lo >= 0 else ""
        raise DataError(f"{what}: values in [{lo:g}, {hi:g}]; expected images with values in [0, 1]{hint}")
    return x.astype(np.float32)


def _read_folder(folder: Path, what: str) -> np.ndarray:
    import PIL.Image

    from aepipe.errors import DataError

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{what}: the folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for file in files:
        try:
            with PIL.Image.open(file) as im:
                grey = im.mode in ("1", "L")
                images.append(np.asarray(im.convert("L" if grey else "RGB")))
        except (OSError, ValueError) as exc:
            raise DataError(f"{what}: cannot read the image {file}: {exc}") from None
        if images[-1].shape[:2] != images[0].shape[:2]:
            raise DataError(f"{what}: {file} is {images[-1].shape[1]}x{images[-1].shape[0]}, {files[0]} "
                            f"{images[0].shape[1]}x{images[0].shape[0]}; the images of a folder must share one size")
    if any(im.ndim == 3 for im in images):  # some in colour: all in colour
        images = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]
        x = np.stack(images).transpose(0, 3, 1, 2)
    else:
        x = np.stack(images)[:, None]
    return x.astype(np.float32) / 255.0


def load_dataset(table: dict[str, Any], device: Any, where: str = "--dataset", pm: Any = None) -> DataBundle:
    """The dataset a pipeline's ``[data]`` table names (``{"name": "mnist5k"}``, with its settings
    and split), loaded and split on ``device`` as a run would see it."""
    import torch
    from pydantic import ValidationError

    from aepipe.config import DataSettings
    from aepipe.data import Feed, prepare
    from aepipe.errors import DataError
    from aepipe.plugins import get_plugin_manager

    pm = pm or get_plugin_manager()
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: the [data] table must be a table, got {table!r}")
    table = {"name": DataSettings.model_fields["name"].default, **table}
    core = {k: v for k, v in table.items() if k in DataSettings.model_fields}
    try:
        settings = DataSettings.model_validate(core)
        cls = pm.registry.get("dataset", settings.name)
        config = cls.Config.model_validate({k: v for k, v in table.items() if k not in DataSettings.model_fields})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{where}: data.{key}: {err['msg']}") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        raw = cls(config).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"dataset '{settings.name}' failed to load: {type(exc).__name__}: {exc}") from exc
    device = torch.device(device)
    return prepare(raw, settings.name, settings.val_fraction, settings.test_fraction, settings.split_seed, device,
                   in_memory=settings.in_memory, memory_fraction=settings.memory_fraction,
                   feed=Feed.for_device(settings.workers, settings.prefetch, device))
