"""Pipeline files: loading, layering, ``--set`` overrides and validation.

A pipeline is resolved from layers, lowest first: the variant's defaults, the pipeline file,
then ``--set dotted.key=value`` overrides. Core sections are validated by the pydantic models of
:mod:`~aepipe.config.schema`, component sections by each component's own ``Config``. Every error
is one line naming the file (or ``--set``), the dotted key and what was expected. Input is
bounded before it is parsed (:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`): no file, ``--set``,
stored pipeline or tree makes a recursion run deep or a parser run out of memory.

One concern per module:

- :mod:`~aepipe.config.schema`: the settings' pydantic models and the names they allow;
- :mod:`~aepipe.config.pipeline`: a resolved :class:`Pipeline` and its :class:`ComponentChoice`;
- :mod:`~aepipe.config.tree`: nested dicts of settings (dotted keys, layers merged, depth);
- :mod:`~aepipe.config.prescan`: the size and nesting bounds, and the pre-scan of TOML text;
- :mod:`~aepipe.config.reading`: a file, TOML text or a ``--set`` argument read within the bounds;
- :mod:`~aepipe.config.validation`: a section validated, its error as one line;
- :mod:`~aepipe.config.resolve`: the layers resolved into a :class:`Pipeline`, step by step;
- :mod:`~aepipe.config.stored`: the pipeline aepipe stores with a run, a model or a checkpoint,
  written and read back within the same bounds.

This package imports no torch; resolving components needs a plugin manager.
"""

from aepipe.config.pipeline import ComponentChoice, Pipeline
from aepipe.config.prescan import MAX_DEPTH, MAX_FILE_BYTES, check_nesting
from aepipe.config.reading import loads_pipeline, parse_override, read_pipeline_file
from aepipe.config.resolve import resolve
from aepipe.config.schema import (
    MODEL_COMPONENTS,
    REGULARIZER_CORE_KEYS,
    REGULARIZERS_SECTION,
    STUDY_NAME_MAX,
    DataSettings,
    EvaluateSettings,
    LRScheduleSettings,
    ModelSettings,
    ParamSpec,
    PipelineSettings,
    TrackingSettings,
    TrainSettings,
    TuneSettings,
    name_problem,
)
from aepipe.config.stored import StoredPipeline, dump, read_stored, read_stored_file
from aepipe.config.tree import flatten, tree_depth, unflatten

__all__ = [
    "MAX_DEPTH", "MAX_FILE_BYTES", "MODEL_COMPONENTS", "REGULARIZERS_SECTION", "REGULARIZER_CORE_KEYS",
    "STUDY_NAME_MAX",
    "ComponentChoice", "DataSettings", "EvaluateSettings", "LRScheduleSettings", "ModelSettings", "ParamSpec",
    "Pipeline", "PipelineSettings", "StoredPipeline", "TrackingSettings", "TrainSettings", "TuneSettings",
    "check_nesting", "dump", "flatten", "loads_pipeline", "name_problem", "parse_override", "read_pipeline_file",
    "read_stored", "read_stored_file", "resolve", "tree_depth", "unflatten",
]
