"""The settings schema: the pydantic models of a pipeline's core sections (``[data]``,
``[model]``, ``[train]``, ``[tracking]``, ``[evaluate]``, ``[tune]``), the rule for names of
studies and experiments, and the component sections ``[model]`` holds.

Component sections are validated by each component's own ``Config``, not here."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import ConfigDict, Field, field_validator, model_validator

from aepipe.kinds import MANY_SECTIONS, MODEL_SECTIONS
from aepipe.strict import StrictModel


class _Section(StrictModel):
    pass


class DataSettings(_Section):
    """``[data]``: the dataset (``name``) and the split; other keys are the dataset's settings."""

    name: str = Field(
        "digits", description="the dataset (`aepipe plugins` lists them); its own settings sit beside this key"
    )
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of the examples held out for validation (early stopping, tuning)"
    )
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0,
                                 description="share held out for the final test metrics (a dataset with its own test "
                                             "split keeps it)")
    split_seed: int = Field(0, description="seed of the random split")
    in_memory: Union[Literal["auto"], bool] = Field(
        "auto",
        description='"auto": hold the data on the training device when it fits memory_fraction of its free memory, '
        "else stream it; true: hold it (uint8 images stay uint8, scaled batch by batch); false: stream it through "
        "DataLoader workers",
    )
    memory_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description='"auto": the share of the device\'s free memory the data may take'
    )
    workers: Optional[int] = Field(None, ge=0, le=64,
                                   description="DataLoader worker processes that read and decode streamed "
                                   "batches (none: on a GPU one per CPU core beyond the first, at most 8; on the CPU "
                                   "one per 4 cores, at most 4, none on 2 cores; 0: read in the training process)")
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
    likelihood: Literal["bernoulli", "gaussian"] = Field(
        "bernoulli", description="reconstruction loss: Bernoulli cross-entropy or Gaussian negative log-likelihood")
    sigma: float = Field(1.0, gt=0.0, description="standard deviation of the Gaussian likelihood")
    samples: int = Field(1, ge=1, le=1000, description="Monte Carlo samples of z per input (L)")
    conditional: bool = Field(
        False, description="encoder and decoder also see the one-hot label (needs a labelled dataset)"
    )
    shared: Optional[dict[str, Union[bool, int, float, str, list[int], list[float]]]] = Field(
        None, description="settings declared once for the whole model: each component whose settings have the key and "
                          "whose own table leaves it out takes this value (a hierarchy's widths); a key no component "
                          "has is an error")


class LRScheduleSettings(_Section):
    """``[train.lr_schedule]``: torch's learning-rate schedulers, stepped per epoch (``onecycle``:
    per batch), with an optional linear warm-up over the first ``warmup_epochs``."""

    name: Literal["none", "cosine", "step", "exponential", "onecycle", "plateau"] = Field(
        "none", description="the learning-rate schedule"
    )
    warmup_epochs: int = Field(0, ge=0, description="epochs of linear warm-up from lr / (warmup_epochs + 1) to lr")
    min_lr: float = Field(0.0, ge=0.0, description="cosine: the final learning rate; plateau: the floor")
    step_size: int = Field(10, ge=1, description="step: epochs between reductions")
    gamma: Optional[float] = Field(
        None, gt=0.0, le=1.0, description="step: factor per reduction (0.1); exponential: per epoch (0.95)"
    )
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
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field(
        "adam", description="torch optimizer of the model's parameters"
    )
    weight_decay: float = Field(
        0.0, ge=0.0, description="the optimizer's own weight decay (the L2 regularizer is weight-l2)"
    )
    max_grad_norm: Optional[float] = Field(None, gt=0.0, description="clip the gradients' norm to this")
    seed: int = Field(0, description="seed of initialisation, shuffling and noise")
    device: str = Field("auto", description="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    patience: int = Field(10, ge=0, description="epochs without improvement before stopping; 0 never stops")
    min_delta: float = Field(0.0, ge=0.0, description="smallest fall of val_loss that counts as an improvement")
    amp: Literal["off", "bf16"] = Field(
        "off", description="bf16 autocast of the forward pass on CUDA (losses stay float32)"
    )
    compile: bool = Field(False, description="torch.compile the encoder and decoder")
    fused: bool = Field(False, description="torch's fused optimizer kernel (adam, adamw, sgd): faster steps, the same "
                                           "updates up to floating-point rounding")
    cuda_graphs: bool = Field(False, description="on CUDA, capture the whole training step (forward, backward, the "
                                                 "optimizer's step) in a CUDA graph replayed every batch; the last "
                                                 "short batch of each epoch is dropped; adam or adamw; refused on "
                                                 "other devices")
    checkpoint_every: int = Field(
        1, ge=1,
        description="epochs between checkpoints; after a killed process, --resume redoes at most this many (and "
                    "checkpoint_seconds)")
    checkpoint_seconds: float = Field(
        30.0,
        ge=0.0,
        description="at least this many seconds between two periodic checkpoints (0: every checkpoint_every epochs); "
        "Ctrl-C, SIGTERM, early stopping and the end of a run always write one",
    )
    lr_schedule: LRScheduleSettings = LRScheduleSettings()


class TrackingSettings(_Section):
    """``[tracking]``: the MLflow experiment and what each run logs."""

    experiment: str = Field("aepipe", min_length=1, max_length=256, description="MLflow experiment (1-256 characters)")
    run_name: Optional[str] = Field(
        None, min_length=1, max_length=250, description="MLflow run name (1-250 characters)"
    )
    log_model: bool = Field(True, description="log the model (aepipe-model/ and a pyfunc model)")
    log_images: bool = Field(True, description="log figures: reconstructions, samples, the code space, loss curves")
    log_dataset: bool = Field(True, description="log the training data as an MLflow dataset input")
    pytorch_flavor: bool = Field(
        False, description="also log MLflow's PyTorch flavour (a pickled model, for mlflow.pytorch.load_model); "
                           "aepipe itself loads weights and the logged pipeline")
    system_metrics: bool = Field(
        False, description="MLflow system metrics (CPU, memory; GPU with nvidia-ml-py); needs psutil"
    )
    system_metrics_interval: Optional[float] = Field(
        None, gt=0,
        description="seconds between system metric samples (default: MLflow's, 10 s or "
                    "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL)")

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
                raise ValueError(
                    "looks like a run id (32 hexadecimal digits): compare and report would take it for one"
                )
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
    max_failures: Optional[int] = Field(
        None,
        ge=1,
        description="stop a worker after this many of its trials failed (default: the larger of 3 and n_trials)",
    )
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
    samples: int = Field(
        2000, ge=10, le=1_000_000, description="generated images compared with the test split (generation)"
    )
    features: list[str] = Field(["domain"], min_length=1, description="feature spaces of the generation metrics "
                                "(`aepipe plugins` lists them: domain, inception with the fid extra)")
    samplers: list[str] = Field([], description="samplers evaluated besides the model's own (prior, gmm, ...; "
                                "a sampler the run does not hold is fitted on its training codes first)")
    iw_samples: int = Field(1000, ge=1, le=100_000, description="importance samples K per example for eval_iw_nll")
    bootstrap: int = Field(100, ge=0, le=10_000,
                           description="resamples of the 95% bootstrap interval of each generation "
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
#: the name of the `[model]` section that holds the regularizers ("regularizers")
REGULARIZERS_SECTION = next(iter(MANY_SECTIONS))
#: keys of a ``[model.regularizers.<key>]`` table that aepipe reads, not the regularizer
REGULARIZER_CORE_KEYS = {"name", "enabled", "warmup_epochs"}
