"""Image datasets read with Pillow: a folder of PNG/JPEG files (``imagefolder``) and Hugging
Face datasets (``huggingface``, with the ``hf`` extra). Images become channels-first ``(C, H, W)``
uint8 arrays, values 0-255, read on demand (:class:`~aepipe.components.Rows`): aepipe holds them
in memory as uint8 where they fit (``data.in_memory``), or streams them batch by batch.

Every image mode Pillow reads keeps its real range on the way to 0-255 (:func:`to_chw`):

* 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``HSV``, ``LAB``, with or without
  alpha) are converted by Pillow; alpha is dropped;
* 16-bit greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``: a 16-bit PNG or TIFF) is scaled from
  its full range 0-65535: ``round(v / 257)``, so 65535 is 255 and images keep their relative
  brightness;
* 32-bit integer (``I``) and float (``F``) images have no fixed range: each is scaled from its
  own minimum and maximum, ``round((v - min) * 255 / (max - min))`` (a constant image is 0); a
  float image holding NaN or an infinity is refused, naming the file;
* any other mode is refused, naming it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field, PositiveInt

from aepipe.plugin import ComponentConfig, DataError, Dataset, RawData, Rows

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Pillow's modes of 16-bit greyscale samples, scaled from 0-65535 (65535 / 255 = 257)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
#: Pillow's modes without a fixed range (32-bit integer, 32-bit float), scaled from each image's own
OWN_RANGE = ("I", "F")
#: modes Pillow converts only through another mode
_VIA = {"LAB": "RGB", "La": "LA"}


class ImageDataWarning(UserWarning):
    """An image dataset read as asked, with something the user should know (an empty class folder)."""


class ImageConfig(ComponentConfig):
    """``image_size``: [height, width] every image is resized to (default: the first image's
    size; images of another size are then an error naming one); ``channels``: 1 (grey) or 3
    (RGB), converted as needed; ``limit``: use only the first N images (in file-name order)."""

    image_size: Optional[tuple[PositiveInt, PositiveInt]] = None
    channels: Literal[1, 3] = 3
    limit: Optional[int] = Field(None, ge=1)


def to_8bit(image: Any, where: str) -> Any:
    """A Pillow image of 16-bit, 32-bit integer or float samples as an 8-bit greyscale (``L``)
    image scaled from its real range (see the module's docstring); other images as they are."""
    from PIL import Image

    if image.mode not in SIXTEEN_BIT + OWN_RANGE:
        return image
    values = np.asarray(image).astype(np.float64)
    if image.mode in SIXTEEN_BIT:
        scaled = np.rint(values / 257.0)
    else:
        if not np.isfinite(values).all():
            raise DataError(f"{where}: a float image (Pillow mode 'F') holding NaN or infinite values")
        lo, hi = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if hi == lo else np.rint((values - lo) * (255.0 / (hi - lo)))
    return Image.fromarray(scaled.astype(np.uint8))


def to_chw(image: Any, channels: int, size: tuple[int, int] | None, where: str) -> np.ndarray:
    """A Pillow image (or an array) as a ``(channels, H, W)`` uint8 array, resized to ``size``
    ([H, W]) where given; every mode with its real range (see the module's docstring), or
    refused by name."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise DataError(f"{where}: an image array of dtype {array.dtype}; expected uint8 (0-255)")
        image = Image.fromarray(array)
    image = to_8bit(image, where)
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        try:
            image = image.convert(_VIA[image.mode]).convert(mode) if image.mode in _VIA else image.convert(mode)
        except ValueError:
            raise DataError(
                f"{where}: an image of Pillow mode '{image.mode}', which aepipe does not convert to {mode}; "
                "save it as 8-bit or 16-bit greyscale, RGB or RGBA"
            ) from None
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def stack(images: list[np.ndarray], names: list[str], shape: tuple[int, ...], where: str) -> np.ndarray:
    """One ``(n, C, H, W)`` array of images of ``shape``; an image of another size is an error
    (without data.image_size, every image must have the first one's size)."""
    for image, name in zip(images, names):
        if image.shape != shape:
            raise DataError(
                f"{where}: {name} is {image.shape[1]}x{image.shape[2]}, the first image {shape[1]}x{shape[2]}; "
                "set data.image_size = [H, W] to resize them all"
            )
    return np.stack(images) if images else np.empty((0, *shape), dtype=np.uint8)


#: bytes per pixel Pillow holds for an image of each mode once decoded (bands of 8 bits are kept
#: four to a 32-bit pixel); a mode not listed counts 4
PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}


def decoded_bytes(width: int, height: int, mode: str, channels: int) -> int:
    """The memory that decoding one ``width`` x ``height`` image of Pillow ``mode`` into
    ``channels`` takes at its peak (:func:`to_chw`): the decoded image, its float64 rescaling
    (16-bit, 32-bit and float modes), its conversion and the array made of it."""
    pixels = width * height
    rescale = 8 + 8 + 1 if mode in SIXTEEN_BIT + OWN_RANGE else 0
    return pixels * (PIXEL_BYTES.get(mode, 4) + rescale + (4 if channels == 3 else 1) + channels)


def header(path: Path) -> tuple[int, int, str]:
    """The width, height and mode of the image file ``path``, from its header: nothing is
    decoded. Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is one
    DataError beyond twice the limit, as Pillow has it, and one ImageDataWarning beyond it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height, mode = *image.size, image.mode
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path}: {_bomb(exc)}; aepipe does not decode it (Pillow's decompression-bomb limit: "
            f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,} pixels, refused beyond twice that)"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image: {exc}") from None
    if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
        warnings.warn(f"{path}: a {width}x{height} image ({width * height:,} pixels), more than Pillow's "
                      f"decompression-bomb limit PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,}; read as it "
                      "is", ImageDataWarning,
                      stacklevel=2)
    return width, height, mode


def _bomb(exc: BaseException) -> str:
    """Pillow's DecompressionBombError in aepipe's words: ``an image of 400,000,000 pixels``."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"an image of {int(found.group(1)):,} pixels" if found else "an image larger than Pillow decodes"


class ImageFiles(Rows):
    """Image files read and decoded on demand, each ``(channels, H, W)`` uint8.

    Every file's header is read first, none decoded: its size (without ``size``, each must be
    the first one's), its mode, and what decoding it takes; an image whose decoding is more than
    this process may allocate (:func:`aepipe.limits.memory_budget`) is refused naming the file and
    the size. The rows' shape comes from the headers too, so the dataset's decoded size (``n``
    rows of ``(channels, H, W)`` bytes) is known before any image is decoded: holding it in memory
    is then checked against the same budget (:func:`aepipe.data.choose_path`), else it streams."""

    def __init__(self, files: list[Path], channels: int, size: tuple[int, int] | None, where: str):
        self.files, self.channels, self.size, self.where = files, channels, size, where
        heads = [header(path) for path in files]
        width, height, _ = heads[0]
        h, w = size if size is not None else (height, width)
        self.shape, self.dtype = (len(files), channels, h, w), np.dtype(np.uint8)
        if size is None:
            for path, (pw, ph, _) in zip(files, heads):
                if (pw, ph) != (width, height):
                    raise DataError(f"{where}: {path} is {ph}x{pw}, the first image {height}x{width}; "
                                    "set data.image_size = [H, W] to resize them all")
        self._check_budget(heads)

    def _check_budget(self, heads: list[tuple[int, int, str]]) -> None:
        from aepipe.plugin import size_text
        from aepipe.plugin import memory_budget

        costs = [decoded_bytes(pw, ph, mode, self.channels) for pw, ph, mode in heads]
        largest = int(np.argmax(costs))
        self.largest = costs[largest]
        budget = memory_budget("cpu")
        if budget.bytes is not None and costs[largest] > budget.bytes:
            pw, ph, mode = heads[largest]
            raise DataError(f"{self.files[largest]}: a {pw}x{ph} image (Pillow mode '{mode}') takes "
                            f"{size_text(costs[largest])} to decode, more than the {size_text(budget.bytes)} this "
                            f"process may allocate ({budget.limit})")

    def _check_batch(self, n: int) -> None:
        """Refuse reading ``n`` rows at once (a streamed batch) that would not fit: their decoded
        rows and the largest image's decoding."""
        from aepipe.plugin import size_text
        from aepipe.plugin import memory_budget

        need = n * int(np.prod(self.shape[1:])) + self.largest
        budget = memory_budget("cpu")
        if budget.bytes is not None and need > budget.bytes:
            c, h, w = self.shape[1:]
            raise DataError(
                f"{self.where}: reading {n:,} images of {c}x{h}x{w} at once takes {size_text(need)}, more than the "
                f"{size_text(budget.bytes)} this process may allocate ({budget.limit}); lower train.batch_size, "
                "or set data.image_size = [H, W] to make them smaller"
            )

    def _one(self, i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self.files[i]
        try:
            with Image.open(path) as image:
                return to_chw(image, self.channels, self.size, str(path))
        except Image.DecompressionBombError as exc:
            raise DataError(f"{path}: {_bomb(exc)}, beyond Pillow's decompression-bomb limit") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{path}: not a readable image: {exc}") from None

    def read(self, indices: np.ndarray) -> np.ndarray:
        self._check_batch(len(indices))
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.uint8)
        for k, i in enumerate(indices):
            image = self._one(int(i))
            if image.shape != self.shape[1:]:
                stack([image], [str(self.files[int(i)])], self.shape[1:], self.where)  # the error naming it
            out[k] = image
        return out


class ImageFolderConfig(ImageConfig):
    """``path``: a folder of images, one subfolder per class (labels: the subfolders in name
    order) or images directly in it (no labels). Labels are stable: a class subfolder without
    images keeps its label (a warning names it), so the others keep theirs; folders whose
    names start with ``.`` are not classes."""

    path: str


class ImageFolder(Dataset):
    """A folder of PNG/JPEG images: one subfolder per class (labelled), or flat (unlabelled)."""

    name = "imagefolder"
    Config = ImageFolderConfig

    def load(self) -> RawData:
        c = self.config
        root = Path(c.path).expanduser()
        if not root.is_dir():
            raise DataError(f"dataset 'imagefolder': {root} is not a folder")
        found = {p.name: _images(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
        classes = sorted(found) if any(found.values()) else []
        if classes:
            files = [(f, label) for label, name in enumerate(classes) for f in found[name]]
            empty = [f"'{name}' (label {label})" for label, name in enumerate(classes) if not found[name]]
            if empty:
                warnings.warn(
                    f"dataset 'imagefolder': class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)} in {root} "
                    f"hold{'' if len(empty) > 1 else 's'} no images; kept as a class, so that every class keeps "
                    "its label (the subfolders in name order)",
                    ImageDataWarning,
                    stacklevel=2,
                )
        else:
            files = [(f, None) for f in _images(root)]
        if not files:
            raise DataError(f"dataset 'imagefolder': no images ({', '.join(EXTENSIONS)}) in {root} or its subfolders")
        if c.limit:
            files = files[: c.limit]
        x = ImageFiles([f for f, _ in files], c.channels, c.image_size, f"dataset 'imagefolder' in {root}")
        y = np.array([label for _, label in files], dtype=np.int64) if classes else None
        return RawData(x, y, (0.0, 255.0), tuple(x.shape[1:]), len(classes), source=str(root))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


class HuggingFaceConfig(ImageConfig):
    """``path``: a dataset saved with ``save_to_disk``, a local data folder (for example of
    images, read by the library's ``imagefolder`` builder) or, on a machine that is online, a
    Hub name; ``split``: the split to train on (the others are ignored: aepipe makes its own
    validation and test split); ``image_column`` and ``label_column`` (none: no labels)."""

    path: str
    split: str = "train"
    image_column: str = "image"
    label_column: Optional[str] = "label"


class HuggingFace(Dataset):
    """A Hugging Face dataset of images (needs ``aepipe[hf]``): saved to disk, a local folder, or the Hub."""

    name = "huggingface"
    Config = HuggingFaceConfig

    def load(self) -> RawData:
        c = self.config
        table = open_hf(c.path, c.split)
        columns = table.column_names
        label = c.label_column or None  # "" in a TOML file: no labels
        if c.image_column not in columns:
            raise DataError(f"dataset 'huggingface' {c.path}: no column '{c.image_column}' (has: "
                            f"{', '.join(columns)}); set data.image_column")
        if label is not None and label not in columns:
            raise DataError(
                f"dataset 'huggingface' {c.path}: no column '{c.label_column}' (has: {', '.join(columns)}); "
                'set data.label_column, or none with data.label_column = ""'
            )
        n = len(table) if not c.limit else min(len(table), c.limit)
        if n == 0:
            raise DataError(f"dataset 'huggingface' {c.path}: split '{c.split}' holds no rows")
        x = TableImages(table, c.image_column, n, c.channels, c.image_size, f"dataset 'huggingface' {c.path}")
        y, n_classes = None, 0
        if label is not None:  # the label column alone: no image is decoded for it
            y = np.asarray(table.select_columns([label])[:n][label], dtype=np.int64)
            feature = table.features.get(label)
            n_classes = len(feature.names) if getattr(feature, "names", None) else int(y.max()) + 1
        return RawData(x, y, (0.0, 255.0), tuple(x.shape[1:]), n_classes, source=f"huggingface:{c.path}")


class TableImages(Rows):
    """The images of a Hugging Face dataset's column, decoded on demand from its memory-mapped
    Arrow files, each ``(channels, H, W)`` uint8."""

    def __init__(self, table: Any, column: str, n: int, channels: int, size: tuple[int, int] | None, where: str):
        self.table = table.select_columns([column])
        self.column, self.channels, self.size, self.where = column, channels, size, where
        first = to_chw(self._rows([0])[0], channels, size, f"{where} row 0")
        self.shape, self.dtype = (n, *first.shape), np.dtype(np.uint8)

    def _rows(self, rows: list[int]) -> list[Any]:
        """The images of ``rows``, decoded by the datasets library (with Pillow): an image beyond
        Pillow's decompression-bomb limit is one DataError naming the rows."""
        from PIL import Image

        try:
            return self.table[rows][self.column] if rows else []
        except Image.DecompressionBombError as exc:
            raise DataError(
                f"{self.where} rows {rows[0]}..{rows[-1]}: {_bomb(exc)}, beyond Pillow's decompression-bomb limit "
                f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,} pixels, refused beyond twice that)"
            ) from None

    def read(self, indices: np.ndarray) -> np.ndarray:
        rows = [int(i) for i in indices]
        images = self._rows(rows)
        return stack(
            [to_chw(image, self.channels, self.size, f"{self.where} row {i}") for i, image in zip(rows, images)],
            [f"row {i}" for i in rows],
            self.shape[1:],
            self.where,
        )


def open_hf(path: str, split: str) -> Any:
    """The split ``split`` of the dataset at ``path`` (saved with ``save_to_disk``, a local
    folder of data files, or a Hub name)."""
    try:
        import datasets
    except ImportError:
        raise DataError("dataset 'huggingface' needs Hugging Face datasets: pip install 'aepipe[hf]'") from None
    local = Path(path).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            loaded = datasets.load_from_disk(str(local))
        elif local.is_dir():
            loaded = datasets.load_dataset(str(local), split=split)
        else:
            loaded = datasets.load_dataset(path, split=split)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
        raise DataError(f"dataset 'huggingface' {path}: cannot open: {' '.join(str(exc).split())[:300]}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(
                f"dataset 'huggingface' {path}: no split '{split}' (has: {', '.join(loaded)}); set data.split"
            )
        loaded = loaded[split]
    return loaded
