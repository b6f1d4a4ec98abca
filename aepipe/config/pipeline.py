"""A resolved pipeline: its validated settings and the components it chose."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aepipe.config.schema import REGULARIZERS_SECTION, PipelineSettings
from aepipe.config.tree import flatten

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.components import ComponentConfig


@dataclass
class ComponentChoice:
    """A component picked by a pipeline: its kind, name, class and validated settings."""

    kind: str
    name: str
    cls: type
    config: ComponentConfig
    path: str  # dotted section, e.g. "model.encoder"
    warmup_epochs: int = 0  # regularizers and bottlenecks: epochs over which the weight ramps up from 0


@dataclass
class Pipeline:
    """A fully resolved pipeline."""

    settings: PipelineSettings
    dataset: ComponentChoice
    components: dict[str, ComponentChoice]  # "encoder", "decoder", optional "corruption", "prior"
    regularizers: dict[str, ComponentChoice]
    source: str = "<defaults>"
    origins: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The resolved pipeline as a nested dict, every default filled in."""
        out = self.settings.model_dump(exclude_none=True)
        out["data"].update(self.dataset.config.model_dump(exclude_none=True))
        for section, choice in self.components.items():
            out["model"][section] = {"name": choice.name, **choice.config.model_dump(exclude_none=True)}
            if choice.warmup_epochs:  # a bottleneck's losses' warm-up, written only where set
                out["model"][section]["warmup_epochs"] = choice.warmup_epochs
        out["model"][REGULARIZERS_SECTION] = {
            key: ({"name": choice.name} if choice.name != key else {})
            | {"warmup_epochs": choice.warmup_epochs}
            | choice.config.model_dump(exclude_none=True)
            for key, choice in self.regularizers.items()
        }
        return out

    def flat(self) -> dict[str, Any]:
        """Dotted keys to values: the names MLflow params and Optuna search spaces use."""
        return flatten(self.as_dict())

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.as_dict())

    @property
    def variant(self) -> str:
        return self.settings.variant or "custom"
