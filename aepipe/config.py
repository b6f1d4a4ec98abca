"""Pipeline files: loading, layering, ``--set`` overrides and validation.

A pipeline is resolved from layers, lowest first: the variant's defaults, the pipeline file,
then ``--set dotted.key=value`` overrides. Core sections are validated by the pydantic models
below, component sections by each component's own ``Config``. Every error is one line naming
the file (or ``--set``), the dotted key and what was expected. Input is bounded before it is
parsed (:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`): no file, ``--set`` or tree makes a
recursion run deep or a parser run out of memory.

This module imports no torch; resolving components needs a plugin manager.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aepipe.errors import ConfigError
from aepipe.strict import StrictModel
from aepipe.kinds import BY_NAME, MANY_SECTIONS, MODEL_SECTIONS

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.components import ComponentConfig
    from aepipe.plugins import AepipePluginManager


class _Section(StrictModel):
    pass


class DataSettings(_Section):
    """``[data]``: the dataset (``name``) and the split; other keys are the dataset's settings."""

    name: str = Field("digits", description="the dataset (`aepipe plugins` lists them); its own settings sit beside this key")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of the examples held out for validation (early stopping, tuning)")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share held out for the final test metrics (a dataset with its own test split keeps it)")
    split_seed: int = Field(0, description="seed of the random split")
    in_memory: Union[Literal["auto"], bool] = Field(
        "auto", description='"auto": hold the data on the training device when it fits memory_fraction of its free memory, '
        "else stream it; true: hold it (uint8 images stay uint8, scaled batch by batch); false: stream it through "
        "DataLoader workers")
    memory_fraction: float = Field(0.5, gt=0.0, le=1.0, description='"auto": the share of the device\'s free memory the data may take')
    workers: Optional[int] = Field(None, ge=0, le=64, description="DataLoader worker processes that read and decode streamed "
                                   "batches (none: on a GPU one per CPU core beyond the first, at most 8; on the CPU one per 4 "
                                   "cores, at most 4, none on 2 cores; 0: read in the training process)")
    prefetch: int = Field(2, ge=1, le=64, description="batches each worker reads ahead")

    @field_validator("in_memory", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: Any) -> Any:
        if value != "auto" and not isinstance(value, bool):
            raise ValueError('expected "auto", true or false')
        return value


class ModelSettings(_Section):
    """``[model]``: code size, likelihood and Monte Carlo samples; components are sub-tables."""

    code_dim: int = Field(16, ge=1, description="size of the code (latent) layer")
    likelihood: Literal["bernoulli", "gaussian"] = Field("bernoulli", description="reconstruction loss: Bernoulli cross-entropy or Gaussian negative log-likelihood")
    sigma: float = Field(1.0, gt=0.0, description="standard deviation of the Gaussian likelihood")
    samples: int = Field(1, ge=1, le=1000, description="Monte Carlo samples of z per input (L)")
    conditional: bool = Field(False, description="encoder and decoder also see the one-hot label (needs a labelled dataset)")


class LRScheduleSettings(_Section):
    """``[train.lr_schedule]``: torch's learning-rate schedulers, stepped per epoch (``onecycle``:
    per batch), with an optional linear warm-up over the first ``warmup_epochs``."""

    name: Literal["none", "cosine", "step", "exponential", "onecycle", "plateau"] = Field("none", description="the learning-rate schedule")
    warmup_epochs: int = Field(0, ge=0, description="epochs of linear warm-up from lr / (warmup_epochs + 1) to lr")
    min_lr: float = Field(0.0, ge=0.0, description="cosine: the final learning rate; plateau: the floor")
    step_size: int = Field(10, ge=1, description="step: epochs between reductions")
    gamma: Optional[float] = Field(None, gt=0.0, le=1.0, description="step: factor per reduction (0.1); exponential: per epoch (0.95)")
    max_lr: Optional[float] = Field(None, gt=0.0, description="onecycle: the peak (default 10 x train.lr)")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="onecycle: share of the steps spent rising")
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="plateau: factor per reduction")
    patience: int = Field(5, ge=0, description="plateau: epochs without improvement of val_loss before a reduction")

    @model_validator(mode="after")
    def _onecycle_warms_itself(self) -> "LRScheduleSettings":
        if self.name == "onecycle" and self.warmup_epochs:
            raise ValueError("onecycle has its own warm-up (pct_start); leave warmup_epochs at 0")
        return self


class TrainSettings(_Section):
    """``[train]``: optimisation, seed, device, early stopping."""

    epochs: int = Field(30, ge=1, description="passes over the training data (fewer with early stopping)")
    batch_size: int = Field(128, ge=1, description="examples per optimisation step")
    lr: float = Field(1e-3, gt=0.0, description="learning rate (the peak, with a schedule)")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="torch optimizer of the model's parameters")
    weight_decay: float = Field(0.0, ge=0.0, description="the optimizer's own weight decay (the L2 regularizer is weight-l2)")
    max_grad_norm: Optional[float] = Field(None, gt=0.0, description="clip the gradients' norm to this")
    seed: int = Field(0, description="seed of initialisation, shuffling and noise")
    device: str = Field("auto", description="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    patience: int = Field(10, ge=0, description="epochs without improvement before stopping; 0 never stops")
    min_delta: float = Field(0.0, ge=0.0, description="smallest fall of val_loss that counts as an improvement")
    amp: Literal["off", "bf16"] = Field("off", description="bf16 autocast of the forward pass on CUDA (losses stay float32)")
    compile: bool = Field(False, description="torch.compile the encoder and decoder")
    fused: bool = Field(False, description="torch's fused optimizer kernel (adam, adamw, sgd): faster steps, the same "
                                           "updates up to floating-point rounding")
    checkpoint_every: int = Field(
        1, ge=1, description="epochs between checkpoints; after a killed process, --resume redoes at most this many (and checkpoint_seconds)")
    checkpoint_seconds: float = Field(
        30.0, ge=0.0, description="at least this many seconds between two periodic checkpoints (0: every checkpoint_every epochs); "
                                  "Ctrl-C, SIGTERM, early stopping and the end of a run always write one")
    lr_schedule: LRScheduleSettings = LRScheduleSettings()


class TrackingSettings(_Section):
    """``[tracking]``: the MLflow experiment and what each run logs."""

    experiment: str = Field("aepipe", min_length=1, max_length=256, description="MLflow experiment (1-256 characters)")
    run_name: Optional[str] = Field(None, min_length=1, max_length=250, description="MLflow run name (1-250 characters)")
    log_model: bool = Field(True, description="log the model (aepipe-model/ and a pyfunc model)")
    log_images: bool = Field(True, description="log figures: reconstructions, samples, the code space, loss curves")
    log_dataset: bool = Field(True, description="log the training data as an MLflow dataset input")
    pytorch_flavor: bool = Field(
        False, description="also log MLflow's PyTorch flavour (a pickled model, for mlflow.pytorch.load_model); "
                           "aepipe itself loads weights and the logged pipeline")
    system_metrics: bool = Field(False, description="MLflow system metrics (CPU, memory; GPU with nvidia-ml-py); needs psutil")
    system_metrics_interval: Optional[float] = Field(
        None, gt=0, description="seconds between system metric samples (default: MLflow's, 10 s or MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL)")

    @field_validator("experiment", "run_name")
    @classmethod
    def _mlflow_name(cls, value: Optional[str]) -> Optional[str]:
        """A name MLflow stores and its UI shows as written: printable, no spaces at either end."""
        if value is not None:
            if value != value.strip():
                raise ValueError("has spaces at its start or end")
            if not value.isprintable():
                raise ValueError("has a control character (a newline, a tab)")
            if _RUN_ID_LIKE.fullmatch(value):
                raise ValueError("looks like a run id (32 hexadecimal digits): compare and report would take it for one")
        return value


#: what `compare`, `evaluate` and `report` take for a run id (any case): no study, experiment or
#: registered model may be named so, or it would shadow the run
_RUN_ID_LIKE = re.compile(r"[0-9a-fA-F]{32}")
#: characters MLflow's Model Registry refuses in a name (a study's best model is registered under its name)
_NOT_IN_MODEL_NAMES = "/:%\\"
STUDY_NAME_MAX = 200


def name_problem(value: str, max_length: int = STUDY_NAME_MAX, registry: bool = True) -> str | None:
    """Why ``value`` cannot name a study, an experiment or a registered model (None: it can):
    empty, too long, spaces at either end, a control character, a character the Model Registry
    refuses, or the look of a run id (which `compare`, `evaluate` and `report` would resolve to
    the study instead of the run)."""
    if not isinstance(value, str) or not value:
        return "is empty"
    if len(value) > max_length:
        return f"is {len(value)} characters long (at most {max_length})"
    if value != value.strip():
        return "has spaces at its start or end"
    if not value.isprintable():
        return "has a control character (a newline, a tab)"
    if registry and (bad := sorted({c for c in value if c in _NOT_IN_MODEL_NAMES})):
        return f"has {' '.join(repr(c) for c in bad)}, which the Model Registry refuses in a name"
    if registry and (value == "." or value.startswith("..")):
        return "is '.' or starts with '..', which the Model Registry refuses (a name read as a path)"
    if _RUN_ID_LIKE.fullmatch(value):
        return "looks like a run id (32 hexadecimal digits): compare, evaluate and report would take it for one"
    return None


class _StrictTune(StrictModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=False)


class ParamSpec(_StrictTune):
    """One search-space entry: ``type`` int, float or categorical."""

    type: Literal["int", "float", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[list[Union[bool, int, float, str]]] = None


class TuneSettings(_StrictTune):
    """``[tune]``: the study ``aepipe tune`` runs over this pipeline (validated with the rest of
    the pipeline, whatever the command; the search space is checked against it by ``aepipe tune``)."""

    n_trials: int = Field(20, ge=1, description="finished (complete or pruned) trials the study should hold")
    timeout: Optional[float] = Field(None, gt=0, description="seconds after which this invocation starts no new trial")
    metric: Optional[str] = None
    direction: Optional[Literal["minimize", "maximize"]] = None
    metrics: Optional[list[str]] = None
    directions: Optional[list[Literal["minimize", "maximize"]]] = None
    sampler: Literal["tpe", "random", "nsgaii", "qmc", "gp"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    warmup_epochs: int = Field(3, ge=0, description="epochs before the median pruner may prune")
    seed: Optional[int] = 0
    max_failures: Optional[int] = Field(None, ge=1, description="stop a worker after this many of its trials failed (default: the larger of 3 and n_trials)")
    log_models: Literal["best", "all"] = Field(
        "best", description="which trials log their figures, model and dataset: 'best' (the study's best trial, or its "
        "Pareto front, when the study ends, rebuilt from their checkpoints) or 'all' (every trial as it ends)")
    space: dict[str, ParamSpec] = {}
    study: Optional[str] = Field(None, description="the study's name, and its best model's in the Model Registry "
                                 "(default: the experiment and the file's name, e.g. 'myexp-pipeline'; just the "
                                 "file's name where the experiment is named like the file)")

    @field_validator("study")
    @classmethod
    def _study_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (problem := name_problem(value)):
            raise ValueError(f"study name {value!r} {problem}")
        return value

    @model_validator(mode="after")
    def _space_keys(self) -> "TuneSettings":
        import re

        for key in self.space:
            if not re.fullmatch(r"[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*)+", key):
                raise ValueError(f"[tune.space] key {key!r} is not a dotted setting name such as \"train.lr\"")
        return self

    @model_validator(mode="after")
    def _objectives(self) -> "TuneSettings":
        if self.metrics is not None or self.directions is not None:
            if self.metric is not None or self.direction is not None:
                raise ValueError("give either metric/direction or metrics/directions, not both")
            if not self.metrics or not self.directions or len(self.metrics) != len(self.directions):
                raise ValueError("metrics and directions must be lists of the same length")
        return self

    @property
    def objective_metrics(self) -> list[str]:
        return self.metrics or [self.metric or "val_loss"]

    @property
    def objective_directions(self) -> list[str]:
        return self.directions or [self.direction or "minimize"]


class EvaluateSettings(_Section):
    """``[evaluate]``: the ``eval_*`` metrics computed at the end of every training run (none by
    default) and the settings ``aepipe evaluate`` starts from."""

    metrics: list[str] = Field([], description="groups (reconstruction, likelihood, representation, generation, "
                               "disentanglement) or single metrics (fid, mig, ...) computed when training ends; "
                               "aepipe evaluate computes every group that applies unless --metrics says otherwise")
    samples: int = Field(2000, ge=10, le=1_000_000, description="generated images compared with the test split (generation)")
    features: list[str] = Field(["domain"], min_length=1, description="feature spaces of the generation metrics "
                                "(`aepipe plugins` lists them: domain, inception with the fid extra)")
    samplers: list[str] = Field([], description="samplers evaluated besides the model's own (prior, gmm, ...; "
                                "a sampler the run does not hold is fitted on its training codes first)")
    iw_samples: int = Field(1000, ge=1, le=100_000, description="importance samples K per example for eval_iw_nll")
    bootstrap: int = Field(100, ge=0, le=10_000, description="resamples of the 95% bootstrap interval of each generation "
                           "metric over samples (eval_<metric>_lo and eval_<metric>_hi); 0: no intervals")
    seed: int = Field(0, ge=0, description="seed of every random draw of the evaluation")

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from aepipe.evaluation import select

        select(value)  # a ValueError names the unknown metric and lists the known ones
        return value


class PipelineSettings(_Section):
    variant: Optional[str] = Field(None, description="the variant whose defaults the file starts from")
    description: str = Field("", description="free text, logged with the run")
    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    tracking: TrackingSettings = TrackingSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    tune: Optional[TuneSettings] = Field(None, description="the study `aepipe tune` runs (see [tune] below)")


#: Component sections under ``[model]`` and the component kind each holds (from aepipe.kinds).
MODEL_COMPONENTS = MODEL_SECTIONS
REGULARIZERS = next(iter(MANY_SECTIONS))
#: keys of a ``[model.regularizers.<key>]`` table that aepipe reads, not the regularizer
REGULARIZER_CORE_KEYS = {"name", "enabled", "warmup_epochs"}


@dataclass
class ComponentChoice:
    """A component picked by a pipeline: its kind, name, class and validated settings."""

    kind: str
    name: str
    cls: type
    config: ComponentConfig
    path: str  # dotted section, e.g. "model.encoder"
    warmup_epochs: int = 0  # regularizers: epochs over which the weight ramps up from 0


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
        out["model"][REGULARIZERS] = {
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


# --- dict helpers -----------------------------------------------------------------------


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys to the leaves of ``tree`` (an empty table has none), in the tree's order;
    iterative, however deep the tree."""
    out: dict[str, Any] = {}
    stack = [(prefix, iter(tree.items()))]
    while stack:
        above, items = stack[-1]
        for key, value in items:
            if isinstance(value, dict):
                if value:
                    stack.append((f"{above}{key}.", iter(value.items())))
                    break
            else:
                out[f"{above}{key}"] = value
        else:
            stack.pop()
    return out


def _merge(lower: dict[str, Any], upper: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Deep-merge ``upper`` over ``lower``. A component section whose ``name`` changes drops
    the lower layer's settings of the old component (they belong to another class). Recursive:
    every tree that reaches it is at most :data:`MAX_DEPTH` deep."""
    out = copy.deepcopy(lower)
    for key, value in upper.items():
        dotted = f"{path}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            low = out[key]
            if "name" in value and "name" in low and value["name"] != low["name"] and _is_component(dotted):
                keep = DataSettings.model_fields if dotted == "data" else REGULARIZER_CORE_KEYS
                low = {k: v for k, v in low.items() if k in keep}
            out[key] = _merge(low, value, dotted + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_component(dotted: str) -> bool:
    parts = dotted.split(".")
    return dotted == "data" or (len(parts) == 2 and parts[0] == "model" and parts[1] in MODEL_COMPONENTS) or (
        len(parts) == 3 and parts[:2] == ["model", REGULARIZERS]
    )


def _origins(tree: dict[str, Any], where: str) -> dict[str, str]:
    """Every dotted key and key prefix of ``tree``, mapped to where it was set."""
    return {key: where for key in _all_prefixes(tree)}


def _all_prefixes(tree: dict[str, Any]) -> list[str]:
    """Every dotted key of ``tree`` and of its sub-tables, parents first; iterative."""
    keys: list[str] = []
    stack = [("", iter(tree.items()))]
    while stack:
        above, items = stack[-1]
        for key, value in items:
            keys.append(above + key)
            if isinstance(value, dict):
                stack.append((f"{above}{key}.", iter(value.items())))
                break
        else:
            stack.pop()
    return keys


def tree_depth(tree: Any) -> int:
    """How deep ``tree`` nests: each key of a table and each array is a level (``{"a": [1]}``
    and ``{"a": []}``: 2), as :func:`check_nesting` counts a file's text; iterative."""
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, (list, tuple)):
            deepest = max(deepest, depth + 1)
            stack.extend((value, depth + 1) for value in node)
    return deepest


# --- bounds on what is read ----------------------------------------------------------------

#: A pipeline file, or one ``--set`` argument, larger than this is refused before it is parsed
#: (1 MiB; the shipped pipelines are under 2 KB).
MAX_FILE_BYTES = 1 << 20
#: The deepest a pipeline may nest: the parts of a table's name (``[a.b]``: 2; ``[[a.b]]``: 3,
#: the array counts), of a dotted key (``a.b.c = 1``: 3) and the arrays and inline tables around
#: a value, counted together along any path (the shipped pipelines reach 6). Checked on the text,
#: before ``tomllib`` reads it: deeper input is one error line, never a deep recursion.
MAX_DEPTH = 64

# The tokens of TOML that nesting depends on, but strings (see :func:`_string_end`); a comment
# is one token, so that a bracket, a dot or a ``#`` inside one counts for nothing. Each repeat is
# of one character class with nothing after it that could fail: linear, nothing to backtrack.
# No possessive repeats or atomic groups: CPython before 3.11.5 (Debian 12's 3.11.2) mis-matches
# them, and ``requires-python`` is 3.11.
_TOKEN = re.compile(r'''
     (?P<space>[ \t\r]+)
    |(?P<newline>\n)
    |(?P<comment>\#[^\n]*)
    |(?P<punct>[\[\]{}=,.])
    |(?P<word>[^\s"'\#\[\]{}=,.]+)
''', re.VERBOSE)
# A value's run of characters that change nothing: in an array (commas and newlines included),
# at the top level (to the end of the line), in an inline table (to the next comma).
_SKIP = {"[": re.compile(r"""[^"'\#\[\]{}]+"""), None: re.compile(r"""[^"'\#\[\]{}\n]+"""),
         "{": re.compile(r"""[^"'\#\[\]{},\n]+""")}
# The characters that end a run inside each kind of string (a closing quote, an escape, the end
# of a one-line string's line).
_STRING_RUN = {'"""': re.compile(r'[^"\\]*'), "'''": re.compile(r"[^']*"),
               '"': re.compile(r'[^"\\\n]*'), "'": re.compile(r"[^'\n]*")}


_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.DOTALL)
_ESCAPED = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", "e": "\x1b", '"': '"', "\\": "\\"}


def _unescape(match: re.Match) -> str:
    code = match.group(1) or match.group(2)
    if code is None:
        return _ESCAPED.get(match.group(3), match.group())
    return chr(int(code, 16)) if int(code, 16) <= 0x10FFFF else match.group()


def _key_name(text: str, start: int, stop: int) -> str:
    """The name a key's part ``text[start:stop]`` (bare, or a one-line string) stands for."""
    if text[start] == "'":
        return text[start + 1:stop - 1]
    if text[start] == '"':
        return _ESCAPE.sub(_unescape, text[start + 1:stop - 1])
    return text[start:stop]


def _string_end(text: str, pos: int) -> int:
    """Where the TOML string that starts at ``text[pos]`` (a quote) ends, as TOML reads it: a
    multi-line one (``\"\"\"`` or ``'''``) at its closing delimiter (with up to two more quotes
    of its kind, which belong to it), a one-line one at its closing quote; a backslash escapes
    the next character in basic strings. An unterminated string runs to the end of its line (or
    of the text, for a multi-line one): tomllib then reports it. One pass, no backtracking."""
    quote, end = text[pos], len(text)
    multi = text.startswith(quote * 3, pos)
    opener = quote * 3 if multi else quote
    run = _STRING_RUN[opener]
    p = pos + len(opener)
    while True:
        p = run.match(text, p).end()
        if p >= end:
            return end
        ch = text[p]
        if ch == "\\":  # basic strings only (the runs of literal strings stop at quotes alone)
            if p + 1 >= end or (not multi and text[p + 1] == "\n"):
                return p + 1 if p + 1 >= end else p  # a one-line string ends at its line
            p += 2
        elif ch == "\n":  # a one-line string that is not closed
            return p
        elif not multi:
            return p + 1
        elif text.startswith(opener, p):
            p += 3
            for _ in range(2):  # ''''' : two quotes inside, then the delimiter
                if p < end and text[p] == quote:
                    p += 1
            return p
        else:
            p += 1  # one or two quotes inside a multi-line string


def _too_deep(where: str, line: int) -> ConfigError:
    return ConfigError(f"{where}: line {line}: nested more than {MAX_DEPTH} levels deep (table names, dotted keys, arrays "
                       f"and inline tables counted together); aepipe reads at most {MAX_DEPTH}")


def check_nesting(text: str, where: str, base: int = 0) -> int:
    """How deep TOML ``text`` nests (as :func:`tree_depth` counts the tree it holds; an empty
    array counts one level more), ``base`` levels above it already; deeper than
    :data:`MAX_DEPTH` is refused. One pass over its tokens, before any parser sees it: strings
    and comments count for nothing, and the text need not be valid TOML (the parser reports that)."""
    stack: list[tuple[str, int]] = []  # the open arrays and inline tables: "[" or "{", depth inside
    mode, line, pos, end = "start", 1, 0, len(text)  # mode: start (of a line), header, key, value
    table = depth = key_base = base  # depth of the current [table]; of the value being read; of a key's first part
    dots, aot = 0, False  # dots of the key or table name being read; whether it names an array of tables

    deepest = base
    # the arrays of tables declared so far ([[a.b]]), as a tree of their names' parts: a header
    # under one ([a.b.c]) is an array's level deeper than its parts count. Node: [is an array, parts]
    tables: list[Any] = [False, {}]
    node, arrays, part = tables, 0, ""

    def deeper(levels: int) -> int:
        nonlocal deepest
        if levels > MAX_DEPTH:
            raise _too_deep(where, line)
        deepest = max(deepest, levels)
        return levels

    while pos < end:
        if mode == "value":  # a value's characters that change nothing, in one step
            skipped = _SKIP[stack[-1][0] if stack else None].match(text, pos)
            if skipped:
                line += skipped.group().count("\n")
                pos = skipped.end()
                if pos >= end:
                    break
        start = pos
        if text[pos] in "\"'":
            stop = _string_end(text, pos)
            kind, value = "string", text[pos]
            line += text.count("\n", pos, stop)
            pos = stop
        else:
            token = _TOKEN.match(text, pos)
            kind, value = token.lastgroup, token.group()
            pos = token.end()
        if kind in ("space", "comment"):
            continue
        if kind == "newline":
            line += 1
            if not stack:  # the end of a top-level line (an array may span lines)
                mode, depth = "start", table
            continue
        if mode == "start":
            if value == "[":
                mode, dots, aot = "header", 0, text.startswith("[", pos)
                pos += aot
                node, arrays, part = tables, 0, ""
            else:
                mode, key_base, dots = ("key" if kind in ("word", "string") else "value"), table, 0
        elif mode == "header":
            if kind in ("word", "string"):
                part = _key_name(text, start, pos)
            elif value == ".":  # a part of the name: one level, two where an array of tables holds it
                node = node[1].setdefault(part, [False, {}]) if aot else (node[1].get(part) if node else None)
                arrays += bool(node and node[0])
                dots += 1
                deeper(base + dots + 1 + aot + arrays)
            elif value == "]":
                table = depth = deeper(base + dots + 1 + aot + arrays)
                if aot:
                    node[1].setdefault(part, [False, {}])[0] = True
                pos += aot and text.startswith("]", pos)
                mode = "value"  # the rest of the line: a comment, or an error tomllib reports
        elif mode == "key":
            if value == ".":
                dots += 1
                deeper(key_base + dots + 1)
            elif value == "=":
                depth, mode = deeper(key_base + dots + 1), "value"
            elif value == "}" and stack:  # an empty inline table
                stack.pop()
                depth, mode = (stack[-1][1] if stack else table), "value"
        elif kind != "punct":
            continue
        elif value == "[":
            depth = deeper(depth + 1)
            stack.append(("[", depth))
        elif value == "{":  # its keys add the levels
            stack.append(("{", depth))
            mode, key_base, dots = "key", depth, 0
        elif value in "]}":
            if stack:
                stack.pop()
            depth = stack[-1][1] if stack else table
        elif value == "," and stack:
            depth = stack[-1][1]
            if stack[-1][0] == "{":
                mode, key_base, dots = "key", depth, 0
    return deepest


# --- reading --------------------------------------------------------------------------------


def _short(text: str, width: int = 40) -> str:
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


def read_pipeline_file(path: str | Path) -> dict[str, Any]:
    """The pipeline file at ``path``; one larger than :data:`MAX_FILE_BYTES` is refused
    unread, one nested deeper than :data:`MAX_DEPTH` before it is parsed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: pipeline file not found")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = fh.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {max(size, len(data))} bytes; a pipeline file may hold at most {MAX_FILE_BYTES} (1 MiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file: {exc}") from None
    return loads_pipeline(text, str(path))


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return root


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``; the value is read as TOML, else text.
    Bounded like a pipeline file: at most :data:`MAX_FILE_BYTES` and :data:`MAX_DEPTH` levels."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"--set {_short(text)}: longer than {MAX_FILE_BYTES} characters")
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".", MAX_DEPTH)):
        raise ConfigError(f"--set {_short(text)}: expected dotted.key=value")
    levels = key.count(".") + 1
    if levels > MAX_DEPTH:
        raise ConfigError(f"--set {_short(text)}: a key of {levels} parts; aepipe reads at most {MAX_DEPTH} levels")
    check_nesting(f"v = {raw.strip()}", f"--set {_short(text)}", base=levels - 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return unflatten({key: value})


# --- validation -----------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a table"
    name = getattr(annotation, "__name__", None)
    return name if name and not str(annotation).startswith("typing.") else str(annotation).replace("typing.", "")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``Optional[Model]`` too), else None."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _format_error(
    exc: ValidationError, model: type[BaseModel], section: str, origins: dict[str, str], label: str, extra_keys: tuple[str, ...] = ()
) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    # Walk to the model that owns the failing field, to list its valid keys.
    owner: type[BaseModel] = model
    for part in loc[:-1]:
        field_info = owner.model_fields.get(part)
        sub = _model_of(field_info.annotation) if field_info else None
        if sub is not None:
            owner = sub
        else:
            break
    key = ".".join(([section] if section else []) + loc)
    where = _origin_for(key, origins)
    if err["type"] == "extra_forbidden":
        valid = ", ".join(sorted(set(owner.model_fields) | (set(extra_keys) if owner is model else set()))) or "(none)"
        return ConfigError(f"{where}: unknown key '{key}' for {label}; valid keys: {valid}")
    if err["type"] == "missing":
        return ConfigError(f"{where}: missing required key '{key}' for {label}")
    field_info = owner.model_fields.get(loc[-1]) if loc else None
    message = err["msg"].removeprefix("Value error, ")  # a validator's own words, as written
    if field_info is not None and _model_of(field_info.annotation) is not None and err["type"] == "value_error":  # a table's own check
        return ConfigError(f"{where}: [{key}]: {message}")
    expected = f"expected {_type_name(field_info.annotation)}: " if field_info is not None else ""
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 80 else f"{shown[:60]}... ({len(shown)} characters)"
    return ConfigError(f"{where}: '{key}' = {shown}: {expected}{message}")


def _origin_for(key: str, origins: dict[str, str]) -> str:
    parts = key.split(".")
    while parts:
        found = origins.get(".".join(parts))
        if found:
            return found
        parts.pop()
    return origins.get("", "<pipeline>")


def _validate(
    model: type[BaseModel], data: Any, section: str, origins: dict[str, str], label: str, extra_keys: tuple[str, ...] = ()
) -> Any:
    if not isinstance(data, dict):
        where = _origin_for(section, origins)
        raise ConfigError(f"{where}: '{section}' must be a table, got {data!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _format_error(exc, model, section, origins, label, extra_keys) from None


def resolve(
    pm: AepipePluginManager,
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    tree: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    values_origin: str = "values",
    stored: bool = False,
) -> Pipeline:
    """Resolve a pipeline from a file (or a dict), ``--set`` overrides and then ``values`` (dotted
    keys to values, e.g. one tuning trial's parameters), validating everything.

    ``stored``: ``tree`` is a pipeline aepipe resolved and stored (a run's, a model's): every
    setting is in it, and its variant's defaults of today are not merged again (a variant that
    gained a component since must not change a stored model)."""
    source = str(path) if path is not None else "<pipeline>"
    if path is None and tree and tree_depth(tree) > MAX_DEPTH:
        raise ConfigError(f"{source}: nested {tree_depth(tree)} levels deep; aepipe reads at most {MAX_DEPTH}")
    for key in values or {}:
        if key.count(".") >= MAX_DEPTH:
            raise ConfigError(f"{values_origin} {_short(key)}: a key of {key.count('.') + 1} parts; aepipe reads at most {MAX_DEPTH} levels")
    file_tree = read_pipeline_file(path) if path is not None else copy.deepcopy(tree or {})
    upper = [(f"--set {text}", parse_override(text)) for text in overrides]
    upper += [(f"{values_origin} {key}", unflatten({key: value})) for key, value in (values or {}).items()]
    set_trees = [tree_ for _, tree_ in upper]

    origins: dict[str, str] = {"": source}
    layers: list[dict[str, Any]] = [file_tree, *set_trees]
    variant_name = file_tree.get("variant")
    for st in set_trees:
        variant_name = st.get("variant", variant_name)
    variant_tree: dict[str, Any] = {}
    registry = pm.registry
    if variant_name is not None and not stored:
        if not isinstance(variant_name, str):
            raise ConfigError(f"{source}: 'variant' must be a string, got {variant_name!r}")
        try:
            variant = registry.get("variant", variant_name)
        except ConfigError as exc:
            raise ConfigError(f"{source}: variant: {exc}") from None
        variant_tree = copy.deepcopy(variant.defaults)
        # a bad default is the registering plugin's, not the one that owns the component
        origins.update(_origins(variant_tree, f"variant '{variant_name}' of {registry.source('variant', variant_name).describe()}"))

    merged = variant_tree
    origins.update(_origins(file_tree, source))
    for label, st in upper:
        origins.update(_origins(st, label))
    for layer in layers:
        merged = _merge(merged, layer)

    # Split component sections from core settings.
    data_section = merged.get("data", {})
    if not isinstance(data_section, dict):
        raise ConfigError(f"{_origin_for('data', origins)}: 'data' must be a table")
    core = {k: v for k, v in merged.items()}
    core["data"] = {k: v for k, v in data_section.items() if k in DataSettings.model_fields}
    model_section = merged.get("model", {})
    if not isinstance(model_section, dict):
        raise ConfigError(f"{_origin_for('model', origins)}: 'model' must be a table")
    core["model"] = {k: v for k, v in model_section.items() if k not in MODEL_COMPONENTS and k != REGULARIZERS}
    settings = _validate(PipelineSettings, core, "", origins, "the pipeline")

    dataset_settings = {k: v for k, v in data_section.items() if k not in DataSettings.model_fields}
    dataset = _choose(registry, "dataset", settings.data.name, dataset_settings, "data", origins)

    components: dict[str, ComponentChoice] = {}
    for section, kind in MODEL_COMPONENTS.items():
        sub = model_section.get(section)
        if sub is None:
            if BY_NAME[kind].required:
                raise ConfigError(
                    f"{source}: no {kind} chosen; set [model.{section}] name = ... "
                    f"(available: {', '.join(registry.names(kind))}) or a variant"
                )
            continue
        path_ = f"model.{section}"
        if not isinstance(sub, dict) or "name" not in sub:
            raise ConfigError(f"{_origin_for(path_, origins)}: [{path_}] needs a 'name'")
        components[section] = _choose(registry, kind, sub["name"], {k: v for k, v in sub.items() if k != "name"}, path_, origins)

    regularizers: dict[str, ComponentChoice] = {}
    regs = model_section.get(REGULARIZERS, {})
    if not isinstance(regs, dict):
        raise ConfigError(f"{_origin_for('model.regularizers', origins)}: [model.regularizers] must be a table of tables")
    for key, sub in regs.items():
        path_ = f"model.{REGULARIZERS}.{key}"
        if not isinstance(sub, dict):
            raise ConfigError(f"{_origin_for(path_, origins)}: [{path_}] must be a table")
        enabled = sub.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{_origin_for(path_ + '.enabled', origins)}: '{path_}.enabled' must be true or false")
        if not enabled:
            continue
        warmup = sub.get("warmup_epochs", 0)
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ConfigError(f"{_origin_for(path_ + '.warmup_epochs', origins)}: '{path_}.warmup_epochs' = {warmup!r}: "
                              "expected a whole number of epochs >= 0")
        name = sub.get("name", key)
        settings_ = {k: v for k, v in sub.items() if k not in REGULARIZER_CORE_KEYS}
        regularizers[key] = _choose(registry, "regularizer", name, settings_, path_, origins)
        regularizers[key].warmup_epochs = warmup

    if not stored:  # [evaluate] runs when training ends: an unknown name fails now, not after the training
        for kind, field_ in (("feature", "features"), ("sampler", "samplers")):
            for name in getattr(settings.evaluate, field_):
                try:
                    registry.get(kind, name)
                except ConfigError as exc:
                    raise ConfigError(f"{_origin_for(f'evaluate.{field_}', origins)}: evaluate.{field_}: {exc}") from None

    return Pipeline(settings, dataset, components, regularizers, source=source, origins=origins)


def _choose(registry: Any, kind: str, name: Any, settings: dict[str, Any], path: str, origins: dict[str, str]) -> ComponentChoice:
    name_key = f"{path}.name"
    if not isinstance(name, str):
        raise ConfigError(f"{_origin_for(name_key, origins)}: '{name_key}' must be a string, got {name!r}")
    try:
        cls = registry.get(kind, name)
    except ConfigError as exc:
        raise ConfigError(f"{_origin_for(name_key, origins)}: {name_key}: {exc}") from None
    core_keys = tuple(DataSettings.model_fields) if path == "data" else ("name",) if kind != "regularizer" else tuple(REGULARIZER_CORE_KEYS)
    config = _validate(cls.Config, settings, path, origins, f"{kind} '{name}'", core_keys)
    return ComponentChoice(kind, name, cls, config, path)
