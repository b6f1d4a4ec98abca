"""The ``activations`` dataset: one site of one layer of a transformer, over a text, one row per
token (special tokens left out), for sparse autoencoders.

The text is tokenized as one stream and cut into windows of ``context`` tokens, each wrapped in
the model's special tokens; the activations are computed once, in batches of windows on the
device, and cached as a float16 ``.npy`` memory map (with the token ids beside it) in
``$AEPIPE_CACHE_DIR/activations`` where that variable is set, else the local store's
``activations/`` folder. The cache is keyed by the model's weights (their sha256), the layer and
site, the text's sha256, ``context`` and ``max_tokens``; it is written to a temporary file and
renamed, and its own sha256 is recorded and checked when it is read back. The rows are returned
as that memory map: ``data.in_memory = false`` streams them (memory flat in the number of tokens).

``normalize``: the activations are divided by the root of their mean squared norm (so the model
sees a unit mean squared norm); the scale is the dataset's ``value_range`` ``(0, s)`` with
``clip`` off, recorded in the model's files, so ``encode`` and ``reconstruct`` take and give the
activations' own units.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, Literal, Optional

import numpy as np
from pydantic import Field

from aepipe.plugin import ComponentConfig, ConfigError, DataError, Dataset, RawData

from aepipe_plugins.datasets import transformer_sites as sites

log = logging.getLogger("aepipe.activations")
#: bumped when the cache's layout or what it holds changes
CACHE_VERSION = 1
CACHE_ENV = "AEPIPE_CACHE_DIR"
PYTHON = "python:"


class ActivationsConfig(ComponentConfig):
    """``model``: a model folder or Hugging Face id (default: the packaged all-MiniLM-L6-v2);
    ``layer``: the block N; ``site``: ``resid`` (the residual stream after block N), ``mlp_out``
    or ``attn_out``; ``text``: a ``.txt`` or ``.jsonl`` file (a ``text`` field per line), a
    folder of them, or ``python:PACKAGE`` (the docstrings of an installed package's modules);
    ``context``: tokens per window; ``max_tokens``: at most this many rows; ``normalize``: unit
    mean squared norm; ``batch_size``: windows per forward pass; ``device``: where the model runs
    (``auto``: CUDA where there is one); ``cache``: the cache folder (default: see the module);
    ``fidelity_windows``: windows over which a dictionary's downstream fidelity is measured at the
    end of a run (0: none; :mod:`aepipe_plugins.datasets.fidelity`)."""

    model: Optional[str] = None
    layer: int = Field(3, ge=0)
    site: Literal["resid", "mlp_out", "attn_out"] = "resid"
    text: str
    context: int = Field(64, ge=1, le=8192)
    max_tokens: int = Field(100_000, ge=3, le=2_000_000_000)
    normalize: bool = True
    batch_size: int = Field(32, ge=1, le=4096)
    device: str = "auto"
    cache: Optional[str] = None
    fidelity_windows: int = Field(32, ge=0, le=4096)


def cache_folder(setting: Optional[str]) -> Path:
    if setting:
        return Path(setting).expanduser()
    shared = os.environ.get(CACHE_ENV)
    if shared:
        return Path(shared).expanduser() / "activations"
    from aepipe.plugin import local_root

    return local_root() / "activations"


def text_files(text: str) -> list[Path]:
    """The ``.txt`` and ``.jsonl`` files of ``text`` (a file or a folder, searched recursively)."""
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".jsonl"))
        if not files:
            raise DataError(f"dataset 'activations': data.text = {text}: a folder with no .txt or .jsonl file")
        return files
    if not path.exists():
        raise DataError(f"dataset 'activations': data.text = {text}: no such file or folder")
    if path.suffix not in (".txt", ".jsonl"):
        raise DataError(f"dataset 'activations': data.text = {text}: expected a .txt or .jsonl file (or a folder)")
    return [path]


def documents(text: str) -> Iterator[tuple[str, str]]:
    """``(where, document)`` of the text: a .txt file is one document, a .jsonl line one."""
    if text.startswith(PYTHON):
        yield from docstrings(text[len(PYTHON):])
        return
    for path in text_files(text):
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"dataset 'activations': {path}: cannot read it as UTF-8 text ({type(exc).__name__}: "
                            f"{str(exc)[:120]})") from None
        if path.suffix == ".txt":
            yield str(path), content
            continue
        for number, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise DataError(f"dataset 'activations': {path}:{number}: not a JSON line") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"dataset 'activations': {path}:{number}: expected an object with a string 'text'")
            yield f"{path}:{number}", record["text"]


def docstrings(package: str) -> Iterator[tuple[str, str]]:
    """The docstrings of an installed package's modules, classes and functions, read from its
    source files (nothing is imported)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise DataError(f"dataset 'activations': data.text = {PYTHON}{package}: no such installed package")
    roots = list(spec.submodule_search_locations or [])
    files = sorted(p for r in roots for p in Path(r).rglob("*.py")) if roots else [Path(spec.origin)]
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        nodes = [tree,
                 *(n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc:
                yield str(path), doc


def token_stream(tokenizer, text: str, limit: int) -> tuple[np.ndarray, str]:
    """The first ``limit`` token ids of the text as one stream (no special tokens), and the
    text's sha256 (of every document read, whole, in order)."""
    h, ids, count = hashlib.sha256(), [], 0
    for where, doc in documents(text):
        h.update(doc.encode("utf-8") + b"\0")
        if count < limit:
            got = tokenizer(doc, add_special_tokens=False, verbose=False)["input_ids"]
            ids.append(np.asarray(got[: limit - count], dtype=np.int32))
            count += len(ids[-1])
    stream = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
    if len(stream) == 0:
        raise DataError(f"dataset 'activations': data.text = {text}: the text is empty (no tokens)")
    return stream, h.hexdigest()


def text_digest(text: str) -> str:
    """The text's sha256, as :func:`token_stream` computes it (without tokenizing)."""
    h, seen = hashlib.sha256(), False
    for _, doc in documents(text):
        h.update(doc.encode("utf-8") + b"\0")
        seen = seen or bool(doc.strip())
    if not seen:
        raise DataError(f"dataset 'activations': data.text = {text}: the text is empty")
    return h.hexdigest()


def select_device(setting: str):
    import torch

    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(setting)
    except RuntimeError:
        raise ConfigError(f"dataset 'activations': data.device = {setting!r} is not a device") from None


class Activations(Dataset):
    """A transformer's activations at one site (residual stream, MLP or attention output) of one
    layer over a text, one row per token, cached once as a float16 memory map."""

    name = "activations"
    Config = ActivationsConfig

    def folder(self) -> Path:
        return sites.model_folder(self.config.model or sites.default_model())

    def key(self) -> tuple[dict, Path]:
        """What the cache is keyed by, and the model's folder."""
        c = self.config
        folder = self.folder()
        width = sites.check_layer(folder, c.layer, c.context)
        key = {"version": CACHE_VERSION, "weights": sites.weights_digest(folder), "layer": c.layer, "site": c.site,
               "text": text_digest(c.text), "context": c.context, "max_tokens": c.max_tokens, "width": width}
        return key, folder

    def paths(self, key: dict) -> tuple[Path, Path, Path]:
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        base = cache_folder(self.config.cache) / f"{self.config.site}-{self.config.layer}-{name}"
        return base.with_suffix(".npy"), base.with_suffix(".ids.npy"), base.with_suffix(".json")

    def cached(self) -> tuple[np.ndarray, np.ndarray, dict]:
        """The activations (a float16 memory map), their token ids and the cache's record,
        computed first where the cache lacks them."""
        key, folder = self.key()
        rows_path, ids_path, meta_path = self.paths(key)
        if not meta_path.is_file():
            from aepipe_plugins.datasets.activation_cache import write_cache

            write_cache(self.config, folder, key, rows_path, ids_path, meta_path)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"dataset 'activations': the cache record {meta_path} cannot be read ({exc}); "
                            "delete it") from None
        for path, field in ((rows_path, "sha256"), (ids_path, "ids_sha256")):
            found = sites.file_digest(path) if path.is_file() else "missing"
            if found != meta.get(field):
                raise DataError(f"dataset 'activations': cache {path}: its digest no longer matches the one recorded "
                                f"in {meta_path.name} ({found[:12]} against {str(meta.get(field))[:12]}); delete both "
                                "to compute it again")
        return np.load(rows_path, mmap_mode="r"), np.load(ids_path, mmap_mode="r"), meta

    def load(self) -> RawData:
        rows, _, meta = self.cached()
        scale = float(np.sqrt(meta["mean_squared_norm"])) if self.config.normalize else 1.0
        if not scale > 0:
            raise DataError(f"dataset 'activations': the activations at {self.config.site} of layer "
                            f"{self.config.layer} are all zero")
        source = f"{meta['model']} layer {self.config.layer} {self.config.site} over {self.config.text}"
        return RawData(rows, None, (0.0, scale), None, 0, source=source, clip=False)


def progress(total: int):
    """A progress bar over ``total`` windows on a terminal; on a pipe, a log line per tenth."""
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("caching activations", total=total)
        bar.start()
        return (lambda done: bar.update(task, completed=done)), bar.stop
    marks = {int(total * k / 10) for k in range(1, 11)}
    return ((lambda done: log.info("activations: %d / %d windows", done, total) if done in marks else None),
            (lambda: None))
