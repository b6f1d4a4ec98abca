"""A stored pipeline: the resolved pipeline aepipe writes with every run (its artifact
``pipeline.toml``), every model folder (``aepipe-model/pipeline.toml``) and every checkpoint, and
reads back to continue, evaluate or load what was trained.

:func:`dump` writes one; :class:`StoredPipeline` reads one back through the same bounds as a
pipeline file (:data:`~aepipe.config.prescan.MAX_FILE_BYTES`, the nesting pre-scan), so a damaged
or hostile copy is one error line naming where it was found (a run, a model folder, a
checkpoint), never a deep recursion or a parser out of memory. Every setting is in a stored
pipeline, so it resolves without its variant's defaults of today (``resolve(..., stored=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aepipe.config.reading import loads_pipeline, read_text
from aepipe.config.resolve import resolve

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.config.pipeline import Pipeline
    from aepipe.plugins import AepipePluginManager


def dump(pipeline: Pipeline) -> str:
    """``pipeline`` as the TOML text aepipe stores: every setting, every default filled in."""
    return pipeline.to_toml()


@dataclass
class StoredPipeline:
    """The tree of a stored pipeline and ``where`` it was found (named by every error)."""

    tree: dict[str, Any]
    where: str

    @classmethod
    def loads(cls, text: str, where: str) -> StoredPipeline:
        """The stored pipeline in TOML ``text``, its size and nesting checked before it is parsed."""
        return cls(loads_pipeline(text, where), where)

    @classmethod
    def read(cls, path: str | Path, where: str) -> StoredPipeline:
        """The stored pipeline in file ``path``; one larger than a pipeline file may be is refused unread."""
        return cls.loads(read_text(path, where), where)

    def resolve(self, pm: AepipePluginManager, overrides: list[str] | tuple[str, ...] = ()) -> Pipeline:
        """The pipeline, validated as stored (no variant defaults merged), with ``--set``
        ``overrides`` over it; its source is :attr:`where`."""
        return resolve(pm, tree=self.tree, overrides=overrides, stored=True, source=self.where)


def read_stored(pm: AepipePluginManager, text: str, where: str) -> Pipeline:
    """The pipeline stored as TOML ``text`` at ``where`` (a run, a model folder, a checkpoint)."""
    return StoredPipeline.loads(text, where).resolve(pm)


def read_stored_file(pm: AepipePluginManager, path: str | Path, where: str) -> Pipeline:
    """The pipeline stored in file ``path``, found at ``where``."""
    return StoredPipeline.read(path, where).resolve(pm)
