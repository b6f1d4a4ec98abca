"""Training, evaluation and tracking of one run.

Data lives on the device as tensors and is batched by index; loss values are summed on the
device and read back once per epoch. Each epoch: validation, early stopping, a checkpoint, the
``aepipe_epoch_end`` hook and one batched MLflow call.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from aepipe import tracking
from aepipe.components import Component
from aepipe.config import Pipeline, flatten
from aepipe.data import DataBundle, prepare
from aepipe.errors import AepipeError, ConfigError, DataError, TrainingError
from aepipe.model import AutoEncoder, build_model

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.plugins import AepipePluginManager


class Interrupted(AepipeError):
    """The run was stopped by the user (Ctrl-C); its checkpoint was saved."""

    exit_code = 130


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else Apple's MPS, else CPU; otherwise the named device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"train.device: '{name}' is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: '{name}' asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: '{name}' asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device: '{name}' asked for, but MPS is not available here")
    return device


def autocast(device: torch.device, amp: str):
    """The forward pass's autocast context: bf16 on CUDA when asked (where it is safe: matrix
    products in bf16, losses and reductions in float32 by autocast's own policy); otherwise a
    no-op. On CPU and MPS ``amp = "bf16"`` is ignored: it would be slower there."""
    import contextlib

    if amp == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_for_device(model: AutoEncoder, device: torch.device, compile_model: bool) -> AutoEncoder:
    """cuDNN autotuning for convolutional models on CUDA, and optional torch.compile of the
    encoder and decoder (in place, so the model pickles as itself)."""
    if device.type == "cuda" and any(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules()):
        torch.backends.cudnn.benchmark = True
    if compile_model:
        model.encoder.compile()
        model.decoder.compile()
    return model


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds every CUDA device too
    np.random.seed(seed % 2**32)


def load_data(pipeline: Pipeline, device: torch.device) -> DataBundle:
    choice = pipeline.dataset
    try:
        raw = choice.cls(choice.config).load()
    except AepipeError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"dataset '{choice.name}' failed to load: {type(exc).__name__}: {exc}") from exc
    s = pipeline.settings.data
    return prepare(raw, choice.name, s.val_fraction, s.test_fraction, s.split_seed, device)


def _culprit(exc: BaseException) -> str:
    """Name the component in whose code ``exc`` was raised, from the traceback."""
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, Component) and owner.name:
            found = f"{owner.kind} '{owner.name}'"
        tb = tb.tb_next
    return found


def sanity_check(model: AutoEncoder, data: DataBundle, batch_size: int, source: str = "") -> None:
    """One forward, loss and backward pass on one batch, before any expensive work."""
    n = min(batch_size, data.x_train.shape[0])
    x = data.x_train[:n]
    y = data.y_train[:n] if data.y_train is not None else None
    try:
        loss, _, _ = model.step(x, y, training=True)
        loss.backward()
    except AepipeError:
        raise
    except Exception as exc:  # noqa: BLE001
        who = _culprit(exc) or "the model"
        raise ConfigError(
            f"{source}: a first training step failed in {who}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            " (check code_dim, the components' settings and that encoder and decoder fit the data)"
        ) from exc
    finally:
        model.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        raise TrainingError(f"{source}: the loss of the first batch is {loss.item()} before any update")


def make_optimizer(params: list[torch.nn.Parameter], name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    classes = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
        "rmsprop": torch.optim.RMSprop,
    }
    return classes[name](params, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def evaluate(model: AutoEncoder, x: torch.Tensor, y: torch.Tensor | None, batch_size: int = 1024) -> dict[str, float]:
    """Loss, its terms, the per-element squared error of the reconstruction and every
    regularizer's own metrics, averaged over ``x`` (one read-back)."""
    was_training = model.training
    model.eval()
    keys: list[str] | None = None
    total: torch.Tensor | None = None
    n = x.shape[0]
    for i in range(0, n, batch_size):
        xb = x[i : i + batch_size]
        yb = y[i : i + batch_size] if y is not None else None
        loss, terms, step = model.step(xb, yb, training=False)
        recon = model.likelihood.mean(model.decoder(step.encoding.code, step.y_onehot))
        values = {"loss": loss, **terms, "mse": (recon - xb).pow(2).mean()}
        for reg in model.regularizers.values():
            values.update(reg.evaluate(step))
        if keys is None:
            keys = list(values)
        vec = torch.stack([values[k].detach().float().reshape(()) for k in keys]) * xb.shape[0]
        total = vec if total is None else total + vec
    model.train(was_training)
    assert keys is not None and total is not None
    return dict(zip(keys, (total / n).tolist()))


def _codes(model: AutoEncoder, x: torch.Tensor, y: torch.Tensor | None, batch: int = 4096) -> np.ndarray:
    parts = [model.encode(x[i : i + batch], None if y is None else y[i : i + batch]).code for i in range(0, x.shape[0], batch)]
    return torch.cat(parts).cpu().numpy()


def _prior_samples(model: AutoEncoder, per_row: int = 10) -> tuple[np.ndarray, list[str] | None]:
    """Decoded prior samples: 4 rows of 10, or one row per class for conditional models."""
    device = next(model.parameters()).device
    if model.spec.conditional:
        classes = model.spec.n_classes
        y = torch.arange(classes, device=device).repeat_interleave(per_row)
        return model.sample(len(y), y).cpu().numpy(), [f"class {c}" for c in range(classes)]
    return model.sample(4 * per_row).cpu().numpy(), None


@dataclass
class RunContext:
    """What lifecycle hooks see of a run."""

    config: Pipeline
    model: AutoEncoder
    data: DataBundle
    device: torch.device
    run_id: str
    history: list[dict[str, float]] = field(default_factory=list)

    _mlflow_client: Any = field(default=None, repr=False)

    def _client(self):
        if self._mlflow_client is None:  # one per run: not MLflow's set-up on every epoch's write
            tracking.setup()
            from mlflow import MlflowClient

            self._mlflow_client = MlflowClient()
        return self._mlflow_client

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics in one batched call (one database transaction)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._client().log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        tracking.setup()
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()}, run_id=self.run_id)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        try:
            self._client().log_figure(self.run_id, figure, artifact_file)
        finally:
            plt.close(figure)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client().log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._client().log_artifact(self.run_id, str(path), artifact_path)


@dataclass
class RunResult:
    run_id: str
    experiment_id: str
    status: str
    epochs: int
    metrics: dict[str, float]
    stopped_early: bool = False
    seconds: float = 0.0
    model: AutoEncoder | None = field(default=None, repr=False)
    data: DataBundle | None = field(default=None, repr=False)
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

    def best_epoch(self) -> dict[str, float]:
        """The metrics of the epoch whose weights were kept (lowest validation loss)."""
        return min(self.history, key=lambda h: h["val_loss"])

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "status": self.status,
            "epochs": self.epochs,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "metrics": self.metrics,
        }


Reporter = Callable[[int, int, dict[str, float]], None]


class Trainer:
    """Trains one pipeline as one MLflow run."""

    def __init__(self, pipeline: Pipeline, pm: AepipePluginManager, device: str | None = None, reporter: Reporter | None = None):
        self.pipeline = pipeline
        self.pm = pm
        self.device = select_device(device or pipeline.settings.train.device)
        self.reporter = reporter

    # --- checkpoints ------------------------------------------------------------------------

    def _save_checkpoint(self, path: Path, model: AutoEncoder, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        own = {k: {name: opt.state_dict() for name, opt in r.optimizers.items()} for k, r in model.regularizers.items() if r.optimizers}
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "regularizer_optimizers": own,
            "pipeline": self.pipeline.to_toml(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy_rng": np.random.get_state(),
            **state,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @staticmethod
    def read_checkpoint(run_id: str) -> dict[str, Any]:
        path = tracking.checkpoint_path(run_id)
        if not path.is_file():
            mlflow = tracking.setup()
            try:
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoint/checkpoint.pt")
            except Exception:  # noqa: BLE001
                raise ConfigError(f"--resume {run_id}: no checkpoint for this run (looked in {path} and its artifacts)") from None
            path = Path(local)
        return torch.load(path, map_location="cpu", weights_only=False)

    def _check_resumable(self, checkpoint: dict[str, Any], run_id: str) -> None:
        import tomllib

        before = flatten(tomllib.loads(checkpoint["pipeline"]))
        now = self.pipeline.flat()
        free = {"train.epochs", "train.checkpoint_every"}  # neither changes what the epochs compute
        differ = sorted(k for k in set(before) | set(now) if k not in free and before.get(k) != now.get(k))
        if differ:
            k = differ[0]
            raise ConfigError(
                f"--resume {run_id}: {self.pipeline.source} differs from the run's pipeline at "
                f"{', '.join(differ[:5])} ({k}: run has {before.get(k)!r}, now {now.get(k)!r}); "
                "only train.epochs and train.checkpoint_every may change"
            )

    # --- the run ----------------------------------------------------------------------------

    def run(self, resume: str | None = None, tags: dict[str, str] | None = None) -> RunResult:
        """Train as a new MLflow run (with extra ``tags``; ``mlflow.parentRunId`` nests it) or
        continue run ``resume`` from its checkpoint."""
        p = self.pipeline
        s = p.settings
        checkpoint = self.read_checkpoint(resume) if resume else None
        if checkpoint is not None:
            self._check_resumable(checkpoint, resume)
        if checkpoint is not None and checkpoint.get("done") and checkpoint["epoch"] >= s.train.epochs:
            raise ConfigError(
                f"--resume {resume}: the run already finished ({checkpoint['epoch']} epochs"
                f"{', stopped early' if checkpoint.get('stopped_early') else ''}); raise train.epochs to train on"
            )
        seed_everything(s.train.seed)
        data = load_data(p, self.device)
        model = build_model(p, data).to(self.device)
        sanity_check(model, data, s.train.batch_size, p.source)
        seed_everything(s.train.seed)
        model = build_model(p, data).to(self.device)  # the same initial weights whatever the check drew
        prepare_for_device(model, self.device, s.train.compile)
        amp = autocast(self.device, s.train.amp)
        optimizer = make_optimizer(model.model_parameters(), s.train.optimizer, s.train.lr, s.train.weight_decay)

        mlflow = tracking.setup()
        exp_id = tracking.experiment_id(s.tracking.experiment)
        history: list[dict[str, float]] = []
        start_epoch, best, bad_epochs, best_state, logged_until = 0, math.inf, 0, None, 0
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            for key, states in checkpoint.get("regularizer_optimizers", {}).items():
                for name, state in states.items():
                    model.regularizers[key].optimizers[name].load_state_dict(state)
            torch.set_rng_state(checkpoint["torch_rng"])
            if checkpoint.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
            np.random.set_state(checkpoint["numpy_rng"])
            start_epoch = checkpoint["epoch"]
            # epochs after the checkpoint that were logged before the interruption are redone
            # (the same numbers, from the saved random state) but not logged twice
            logged_until = max((m.step for m in mlflow.MlflowClient().get_metric_history(resume, "loss")), default=0)
            best, bad_epochs = checkpoint["best"], checkpoint["bad_epochs"]
            best_state = checkpoint.get("best_state")
            history = checkpoint["history"]
            active = mlflow.start_run(run_id=resume)
        else:
            if s.tracking.system_metrics:
                try:
                    import psutil  # noqa: F401 - MLflow's system metrics need it
                except ImportError:
                    raise ConfigError("tracking.system_metrics = true needs psutil: pip install 'aepipe[gpu]'") from None
                if s.tracking.system_metrics_interval is not None:
                    from mlflow.system_metrics import set_system_metrics_sampling_interval

                    set_system_metrics_sampling_interval(s.tracking.system_metrics_interval)
            active = mlflow.start_run(experiment_id=exp_id, run_name=s.tracking.run_name, tags={**self._tags(), **(tags or {})},
                                      log_system_metrics=s.tracking.system_metrics or None)
        run_id = active.info.run_id
        ckpt_path = tracking.checkpoint_path(run_id)
        ctx = RunContext(p, model, data, self.device, run_id, history)
        t0 = time.perf_counter()
        epoch = saved_epoch = start_epoch
        stopped_early = False
        try:
            if checkpoint is None:
                self._log_start(ctx)
            self.pm.call_plugin_hook("aepipe_run_start", run=ctx)
            n = data.x_train.shape[0]
            bs = s.train.batch_size
            owned = [r for r in model.regularizers.values() if r.owns_parameters]
            params = model.model_parameters()
            for epoch in range(start_epoch + 1, s.train.epochs + 1):
                epoch_t0 = time.perf_counter()
                model.train()
                perm = torch.randperm(n, device=self.device)
                keys: list[str] | None = None
                total: torch.Tensor | None = None
                for i in range(0, n, bs):
                    idx = perm[i : i + bs]
                    xb = data.x_train[idx]
                    yb = data.y_train[idx] if data.y_train is not None else None
                    with amp:
                        loss, terms, step = model.step(xb, yb, training=True)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if s.train.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(params, s.train.max_grad_norm)
                    optimizer.step()
                    values = {"loss": loss, **terms}
                    for reg in owned:
                        values.update(reg.update(step))
                    if keys is None:
                        keys = list(values)
                    vec = torch.stack([values[k].detach().float().reshape(()) for k in keys]) * idx.shape[0]
                    total = vec if total is None else total + vec
                assert keys is not None and total is not None
                metrics = dict(zip(keys, (total / n).tolist()))  # the one read-back of the epoch
                bad = [k for k, v in metrics.items() if not math.isfinite(v)]
                if bad:
                    raise TrainingError(f"{p.source}: training diverged at epoch {epoch}: {bad[0]} = {metrics[bad[0]]}"
                                        " (lower train.lr, or set train.max_grad_norm)")
                val = evaluate(model, data.x_val, data.y_val)
                metrics.update({f"val_{k}": v for k, v in val.items()})
                if not math.isfinite(metrics["val_loss"]):
                    raise TrainingError(f"{p.source}: validation loss is {metrics['val_loss']} at epoch {epoch}")
                metrics["epoch_seconds"] = time.perf_counter() - epoch_t0
                for extra in self.pm.call_plugin_hook("aepipe_epoch_end", run=ctx, epoch=epoch, metrics=dict(metrics)):
                    if extra:
                        metrics.update({k: float(v) for k, v in extra.items()})
                if epoch > logged_until:
                    ctx.log_metrics(metrics, step=epoch)  # one batched write per epoch
                history.append({"epoch": epoch, **metrics})
                if self.reporter:
                    self.reporter(epoch, s.train.epochs, metrics)
                if metrics["val_loss"] < best - s.train.min_delta:
                    best, bad_epochs = metrics["val_loss"], 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad_epochs += 1
                stopped_early = bool(s.train.patience) and bad_epochs >= s.train.patience
                if epoch % s.train.checkpoint_every == 0 or stopped_early:
                    self._save_checkpoint(
                        ckpt_path, model, optimizer,
                        {"epoch": epoch, "best": best, "bad_epochs": bad_epochs, "best_state": best_state,
                         "history": history, "done": stopped_early, "stopped_early": stopped_early},
                    )
                    saved_epoch = epoch
                if stopped_early:
                    break
            if best_state is not None:
                model.load_state_dict(best_state)  # evaluate the best epoch's weights
            test = {f"test_{k}": v for k, v in evaluate(model, data.x_test, data.y_test).items()}
            test["train_seconds"] = time.perf_counter() - t0
            test["epochs_trained"] = float(epoch)
            for extra in self.pm.call_plugin_hook("aepipe_run_end", run=ctx, metrics=dict(test)):
                if extra:
                    test.update({k: float(v) for k, v in extra.items()})
            ctx.log_metrics(test)
            self._log_end(ctx, test)
            self._save_checkpoint(
                ckpt_path, model, optimizer,
                {"epoch": epoch, "best": best, "bad_epochs": bad_epochs, "best_state": best_state,
                 "history": history, "done": True, "stopped_early": stopped_early},
            )
            self._finish(mlflow, ckpt_path, "FINISHED")
            return RunResult(run_id, exp_id, "FINISHED", epoch, test, stopped_early, time.perf_counter() - t0, model, data, history)
        except KeyboardInterrupt:
            self._finish(mlflow, ckpt_path, "KILLED", f"interrupted by the user at epoch {epoch}")
            if not saved_epoch:
                raise Interrupted(f"interrupted at epoch {epoch}; run {run_id} marked KILLED before its first checkpoint "
                                  f"(train.checkpoint_every = {s.train.checkpoint_every}); start it again") from None
            raise Interrupted(
                f"interrupted at epoch {epoch}; run {run_id} marked KILLED, checkpoint of epoch {saved_epoch} saved; "
                f"continue with: aepipe train {p.source} --resume {run_id}"
            ) from None
        except AepipeError as exc:
            self._finish(mlflow, ckpt_path, "FAILED", str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - any failure marks the run FAILED, then propagates
            # an exception may carry its own run status (a pruned tuning trial: KILLED)
            status = getattr(exc, "run_status", "FAILED")
            detail = str(exc) if status != "FAILED" else f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            self._finish(mlflow, ckpt_path, status, detail)
            raise

    # --- tracking ---------------------------------------------------------------------------

    def _tags(self) -> dict[str, str]:
        from aepipe import __version__

        p = self.pipeline
        tags = {
            "aepipe.variant": p.variant,
            "aepipe.version": __version__,
            "aepipe.dataset": p.dataset.name,
            "aepipe.pipeline": p.source,
            "aepipe.device": str(self.device),
            "mlflow.source.name": "aepipe train",
        }
        used = [p.dataset, *p.components.values(), *p.regularizers.values()]
        registry = self.pm.registry
        if p.settings.variant:
            used_sources = [registry.source("variant", p.settings.variant)]
        else:
            used_sources = []
        used_sources += [registry.source(c.kind, c.name) for c in used]
        for info in used_sources:
            tags[f"aepipe.plugin.{info.dist or info.name}"] = info.version or "unversioned"
        commit = tracking.git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        return tags

    def _log_start(self, ctx: RunContext) -> None:
        mlflow = tracking.setup()
        ctx.log_params(ctx.config.flat())
        ctx.log_text(ctx.config.to_toml(), "pipeline.toml")
        if ctx.config.settings.tracking.log_dataset:
            import mlflow.data

            d = ctx.data
            ds = mlflow.data.from_numpy(
                d.x_train.cpu().numpy(),
                targets=None if d.y_train is None else d.y_train.cpu().numpy(),
                name=d.name,
            )
            mlflow.log_input(ds, context="training")

    def _log_end(self, ctx: RunContext, test: dict[str, float]) -> None:
        s = ctx.config.settings.tracking
        model, data = ctx.model, ctx.data
        model.eval()
        if s.log_images:
            from aepipe import figures

            with torch.no_grad():
                x = data.x_test[:20]
                y = data.y_test[:20] if data.y_test is not None else None
                recon = model(x, y).cpu().numpy()
            title = f"{ctx.config.variant} on {data.name}: test inputs (rows 1, 3) and reconstructions (rows 2, 4)"
            ctx.log_figure(figures.reconstruction_grid(x.cpu().numpy(), recon, data.image_shape, title), "images/reconstructions.png")
            if ctx.history:
                ctx.log_figure(figures.loss_curves(ctx.history, f"{ctx.config.variant} on {data.name}"), "images/loss_curves.png")
            with torch.no_grad():
                codes = _codes(model, data.x_test, data.y_test)
            ctx.log_figure(
                figures.latent_scatter(codes, None if data.y_test is None else data.y_test.cpu().numpy(),
                                       f"{ctx.config.variant} on {data.name}: test codes"),
                "images/latent.png",
            )
            if model.prior is not None:
                with torch.no_grad():
                    images, rows = _prior_samples(model)
                title = f"{ctx.config.variant}: samples from the prior" + (", one row per class" if rows else "")
                ctx.log_figure(figures.sample_grid(images, data.image_shape, title, rows), "images/samples.png")
        if s.log_model:
            self._log_model(ctx)

    def _log_model(self, ctx: RunContext) -> None:
        mlflow = tracking.setup()
        import mlflow.pytorch
        from mlflow.models import infer_signature

        cpu_model = copy.deepcopy(ctx.model).cpu().eval()
        example = ctx.data.x_test[:5].cpu()
        with torch.no_grad():
            out = cpu_model(example, ctx.data.y_test[:5].cpu() if ctx.model.spec.conditional else None)
        signature = infer_signature(example.numpy(), out.numpy())
        from aepipe import __version__

        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"aepipe=={__version__}"]
        mlflow.pytorch.log_model(
            cpu_model,
            name="model",
            pip_requirements=requirements,
            # pickle keeps the whole AutoEncoder (encode, decode, meta); pt2 would keep only a
            # traced forward. Loading needs aepipe and the run's plugins importable.
            serialization_format="pickle",
            signature=signature,
            input_example=None if ctx.model.spec.conditional else example.numpy(),
        )
        from aepipe.serving import log_pyfunc

        log_pyfunc(cpu_model, example.numpy(), requirements)

    def _finish(self, mlflow: Any, ckpt_path: Path, status: str, error: str | None = None) -> None:
        try:
            if error:
                mlflow.set_tag("aepipe.error", error[:5000])
            if ckpt_path.is_file():
                mlflow.log_artifact(str(ckpt_path), "checkpoint")
                # the artifact is now the checkpoint (--resume reads it): no second copy is kept
                ckpt_path.unlink()
                with contextlib.suppress(OSError):
                    ckpt_path.parent.rmdir()
        finally:
            mlflow.end_run(status=status)


def train(
    pipeline: Pipeline,
    pm: AepipePluginManager,
    device: str | None = None,
    resume: str | None = None,
    reporter: Reporter | None = None,
    tags: dict[str, str] | None = None,
) -> RunResult:
    """Train ``pipeline`` as one MLflow run (or continue run ``resume``)."""
    return Trainer(pipeline, pm, device=device, reporter=reporter).run(resume=resume, tags=tags)
