"""Reading a pipeline: a file, TOML text or a ``--set`` argument, each bounded in size and
nesting (:mod:`aepipe.config.prescan`) before ``tomllib`` parses it. A file may start from another
(``extends = "vae.toml"``, a path relative to its folder) and hold only what differs from it."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from aepipe.config.prescan import MAX_DEPTH, MAX_FILE_BYTES, check_nesting
from aepipe.config.tree import merge, unflatten
from aepipe.errors import ConfigError


def short(text: str, width: int = 40) -> str:
    """``text`` as a short quote: its start and its length when longer than ``width``."""
    return repr(text) if len(text) <= width else f"{text[:width]!r}... ({len(text)} characters)"


def loads_pipeline(text: str, where: str) -> dict[str, Any]:
    """The pipeline in TOML ``text`` (``where`` names it in errors), its size and nesting
    checked before ``tomllib`` reads it (:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`)."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: {len(text)} characters; a pipeline may hold at most {MAX_FILE_BYTES} (1 MiB)")
    check_nesting(text, where)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None


def read_text(path: str | Path, where: str) -> str:
    """The text of pipeline file ``path`` (``where`` names it in errors); one larger than
    :data:`MAX_FILE_BYTES` is refused unread."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{where}: {max(size, len(data))} bytes; a pipeline file may hold at most {MAX_FILE_BYTES} (1 MiB)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not a text file: {exc}") from None


#: how many files a chain of ``extends`` may hold, the file itself included
MAX_EXTENDS = 4


def _read_one(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    return loads_pipeline(read_text(path, str(path)), str(path))


def read_pipeline_layers(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """The pipeline file at ``path`` and the files it extends, the first base first: each its name
    and its tree (``extends`` taken out), each read within the bounds of a pipeline file. A file
    extends at most one other (``extends = "base.toml"``, relative to its own folder); a chain
    holds at most :data:`MAX_EXTENDS` files and no cycle."""
    path = Path(path)
    layers = [(str(path), _read_one(path))]
    chain = [path.resolve()]
    while "extends" in layers[-1][1]:
        where, tree = layers[-1]
        base = tree.pop("extends")
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{where}: 'extends' must name a pipeline file (a string), got {base!r}")
        following = Path(where).parent / base
        if following.resolve() in chain:
            cycle = " -> ".join([*(p.name for p in chain), following.name])
            raise ConfigError(f"{where}: extends '{base}', a file of its own chain (a cycle: {cycle})")
        if len(chain) == MAX_EXTENDS:
            raise ConfigError(f"{where}: extends '{base}': a chain of more than {MAX_EXTENDS} pipeline files")
        try:
            layers.append((str(following), _read_one(following)))
        except ConfigError as exc:
            raise ConfigError(f"{where}: extends '{base}': {exc}") from None
        chain.append(following.resolve())
    return layers[::-1]


def read_pipeline_file(path: str | Path) -> dict[str, Any]:
    """The pipeline file at ``path``, merged over the files it extends; one larger than
    :data:`MAX_FILE_BYTES` is refused unread, one nested deeper than :data:`MAX_DEPTH` before it
    is parsed."""
    tree: dict[str, Any] = {}
    for _, layer in read_pipeline_layers(path):
        tree = merge(tree, layer)
    return tree


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``; the value is read as TOML, else text.
    Bounded like a pipeline file: at most :data:`MAX_FILE_BYTES` and :data:`MAX_DEPTH` levels."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"--set {short(text)}: longer than {MAX_FILE_BYTES} characters")
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".", MAX_DEPTH)):
        raise ConfigError(f"--set {short(text)}: expected dotted.key=value")
    levels = key.count(".") + 1
    if levels > MAX_DEPTH:
        raise ConfigError(f"--set {short(text)}: a key of {levels} parts; aepipe reads at most {MAX_DEPTH} levels")
    check_nesting(f"v = {raw.strip()}", f"--set {short(text)}", base=levels - 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return unflatten({key: value})
