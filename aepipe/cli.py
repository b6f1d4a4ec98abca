"""The ``aepipe`` command line (click). Heavy packages are imported inside commands only."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from aepipe import __version__
from aepipe.errors import AepipeError

CONTEXT = {"help_option_names": ["-h", "--help"]}


#: the libraries between aepipe and a tracking store: their errors mean the store failed
STORE_LIBRARIES = {"mlflow", "sqlalchemy", "requests", "urllib3", "psycopg", "alembic"}


def _masked(text: str) -> str:
    """``text`` with its secrets masked, on one line: a control character a user's input put in
    it (a newline, a carriage return) is shown escaped."""
    from aepipe.secrets import mask

    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in mask(text))


class AepipeGroup(click.Group):
    """Turns every :class:`AepipeError`, and every wrong option or argument, into one line on
    stderr and its exit code (2 for both)."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if not ctx.resilient_parsing and not {"-h", "--help"} & set(rest):  # help is always shown
            from aepipe import secrets

            secrets.check_environment()  # a URL that parsers read apart is refused before any command
        return name, command, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AepipeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if not getattr(exc, "reported", False):  # told already: by --nproc's processes, or by rank 0
                click.echo(f"Error: {_masked(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            message = _masked(" ".join(exc.format_message().split()))
            click.echo(f"Error: {message} (see '{where} -h')", err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the tracking store's libraries, failing to reach it
            if ctx.obj and ctx.obj.get("debug") or type(exc).__module__.split(".")[0] not in STORE_LIBRARIES:
                raise
            from aepipe import tracking
            from aepipe.tracking.store import DAMAGED, error_line, recovery_hint

            line = error_line(exc)[:600]  # the root cause, not SQLAlchemy's framing
            hint = f"; {recovery_hint()}" if DAMAGED.search(line) else ""
            click.echo(f"Error: the tracking store {_masked(tracking.tracking_uri())} failed: {type(exc).__name__}: "
                       f"{_masked(line)}{hint} (aepipe --debug shows the traceback)", err=True)
            ctx.exit(2)


@click.group(cls=AepipeGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="aepipe")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """aepipe: train, compare and extend autoencoders; runs are tracked in MLflow."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _check_writable(command: str) -> None:
    """Refuse at once, in one line, a command that writes runs into a read-only or damaged store."""
    from aepipe.tracking.store import check_writable

    check_writable(command)


def _plugin_manager():
    from aepipe.plugins import get_plugin_manager

    return get_plugin_manager()


def _one_line_warnings() -> None:
    """aepipe's own warnings (a skipped plugin) as one line on stderr, each once per command;
    other warnings as Python shows them."""
    import warnings

    shown: set[str] = set()
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("aepipe"):
            text = _masked(str(message))
            if text not in shown:
                shown.add(text)
                click.echo(f"Warning: {text}", err=True)
            return
        default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


@contextlib.contextmanager
def _notes(enabled: bool):
    """aepipe's INFO notes (for example how the data is fed) on stderr while a command runs."""
    import logging

    if not enabled:
        yield
        return
    logger, handler = logging.getLogger("aepipe"), logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _Reporter:
    """A live progress bar on a terminal, one plain line per epoch otherwise."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self.progress = None
        self.task = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]epoch"), MofNCompleteColumn(), BarColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), transient=False,
            )
            self.task = self.progress.add_task("train", total=total, info="")

    def __enter__(self):
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    def __call__(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = f"loss {metrics['loss']:.4g}  val_loss {metrics['val_loss']:.4g}"
        if self.progress:
            self.progress.update(self.task, completed=epoch, total=total, info=info)
        else:
            click.echo(f"epoch {epoch}/{total}  {info}", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting, e.g. train.epochs=5 (repeatable).")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: train.device).")
@click.option("--resume", default=None, metavar="RUN_ID",
              help="Continue a stopped run from its checkpoint, with its own pipeline (PIPELINE and --set may only raise train.epochs).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--nproc", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Processes that train this one model together (torch.distributed: gloo on CPU, NCCL with one GPU each).")
def train(pipeline: Path | None, overrides: tuple[str, ...], device: str | None, resume: str | None, as_json: bool, quiet: bool,
          nproc: int) -> None:
    """Train PIPELINE (a TOML file) as one MLflow run; prints the run id. Ctrl-C or SIGTERM stops
    it between two batches with a checkpoint, and prints the command that continues it."""
    from aepipe.config import resolve
    from aepipe.errors import ConfigError

    if pipeline is None and resume is None:
        raise ConfigError("give a PIPELINE file to train, or --resume RUN_ID to continue a run")
    pm = _plugin_manager()
    resolved = resolve(pm, pipeline, overrides) if pipeline is not None else None
    _check_writable("train")
    if nproc > 1:
        _launch(nproc, pipeline, overrides, device, resume, as_json, quiet)
        return
    from aepipe.training import train as run_training

    leader = os.environ.get("RANK", "0") == "0"  # under a launcher, one process reports
    epochs = resolved.settings.train.epochs if resolved is not None else 0
    with _Reporter(not quiet and leader, epochs) as reporter, _notes(not quiet and leader):
        result = run_training(resolved, pm, device=device, resume=resume, reporter=reporter,
                              overrides=overrides if pipeline is None else ())
    if not leader:
        return
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2))
    else:
        shown = {k: v for k, v in result.metrics.items() if k in ("test_loss", "test_recon", "test_mse")}
        click.echo(
            f"finished {result.epochs} epochs{' (stopped early)' if result.stopped_early else ''} in "
            f"{result.seconds:.1f}s: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()),
            err=True,
        )
        click.echo(result.run_id)


def _launch(nproc: int, pipeline: Path | None, overrides: tuple[str, ...], device: str | None, resume: str | None,
            as_json: bool, quiet: bool) -> None:
    """Run this same command on ``nproc`` processes through torch.distributed.run (one machine)."""
    import subprocess

    from aepipe.errors import AepipeError, ConfigError

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("--nproc: this process was already started by a launcher (WORLD_SIZE is set); drop --nproc")
    args = [sys.executable, "-m", "aepipe.training.launch", "--standalone", f"--nproc-per-node={nproc}", "-m", "aepipe.cli", "train"]
    args += [str(pipeline)] if pipeline is not None else []
    for text in overrides:
        args += ["--set", text]
    for flag, value in (("--device", device), ("--resume", resume)):
        if value is not None:
            args += [flag, value]
    args += ["--json"] * as_json + ["--quiet"] * quiet
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc))),
           "LOGLEVEL": os.environ.get("LOGLEVEL", "ERROR")}
    import signal

    proc = subprocess.Popen(args, env=env)
    # Ctrl-C reaches every process of the terminal's group: the training processes stop
    # together; this one waits for them. SIGTERM (a scheduler's) is passed on to the launcher.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        error = AepipeError(f"--nproc {nproc}: training stopped (exit {code})")
        error.exit_code = code
        error.reported = True  # each process said why already
        raise error


@cli.command(name="new-plugin", context_settings=CONTEXT)
@click.argument("name")
@click.option("--dir", "parent", default=".", type=click.Path(file_okay=False, path_type=Path), help="Where to create it.")
def new_plugin(name: str, parent: Path) -> None:
    """Write a ready plugin distribution NAME (pyproject with the entry point, a component, a
    variant, a pipeline file and tests using aepipe.testing)."""
    from aepipe.template import write

    root = write(name, parent)
    click.echo(f"wrote {root}; next: cd {root} && pip install -e . && aepipe plugins && python -m pytest", err=True)


def _check_plugins(pm, only: str | None = None) -> list[str]:
    """Problems of every installed plugin's components, each naming its distribution; a check
    that cannot run here (data files, settings or a package missing) is listed as skipped."""
    from aepipe.testing import CheckSkipped, check_component, registered_components

    problems = []
    for kind, name in registered_components(pm, plugin=only):
        info = pm.registry.source(kind, name)
        try:
            check_component(kind, name, pm)
        except CheckSkipped as exc:
            click.echo(f"skipped: {exc}", err=True)
            continue
        except BaseException as exc:  # noqa: BLE001 - every failure is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problems.append(f"{info.dist or info.name} {info.version or ''}: {kind} '{name}': {text}")
    return problems


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--check", is_flag=True, help="Validate every plugin: hooks known, components pass the conformance suite.")
@click.option("--plugin", "only", default=None, help="With --check: only this plugin (entry-point name).")
def plugins(as_json: bool, check: bool, only: str | None) -> None:
    """List installed plugins: distribution, version, hooks and components."""
    pm = _plugin_manager()
    registry = pm.registry
    from aepipe.errors import PluginError

    if check:
        if only is not None and only not in pm.infos:
            if only in pm.failures:
                raise PluginError(f"--plugin {only}: {pm.failures[only].describe()}")
            raise PluginError(f"--plugin {only}: no such plugin; installed: {', '.join(sorted(pm.infos))}")
        problems = [f.describe() for name, f in sorted(pm.failures.items()) if only in (None, name)]
        problems += _check_plugins(pm, only)
        for line in problems:
            click.echo(f"problem: {line}", err=True)
        if problems:
            raise PluginError(f"{len(problems)} problem(s) in installed plugins (listed above)")
        click.echo(f"{'plugin ' + only if only else f'all {len(pm.infos)} plugins'}: every component passes the conformance suite", err=True)
        return
    rows = []
    for name, info in sorted(pm.infos.items()):
        rows.append({
            "name": name,
            "distribution": info.dist,
            "version": info.version,
            "module": info.module,
            "hooks": pm.hooks_of(name),
            "components": registry.by_plugin(name),
            "failed": None,
        })
    for name, failure in sorted(pm.failures.items()):
        info = failure.info
        rows.append({"name": name, "distribution": info.dist, "version": info.version, "module": info.module,
                     "hooks": [], "components": {}, "failed": f"{failure.stage}: {failure.cause}"})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']}  ({row['distribution'] or 'no distribution'} {row['version'] or ''})  {row['module']}")
        if row["failed"]:
            click.echo(f"    FAILED to {row['failed']}")
            continue
        click.echo(f"    hooks: {', '.join(row['hooks'])}")
        for kind, names in row["components"].items():
            click.echo(f"    {kind}s: {', '.join(names)}")


def _array_io(run_id: str, input_path: Path, output: Path, device: str, scaled: bool, labels: Path | None):
    """The model of RUN_ID and its input (and labels), every one checked before the model loads."""
    import numpy as np
    import torch

    from aepipe.arrays import check_labels, check_rows, check_width, load_npy
    from aepipe.artifacts import load_run_model
    from aepipe.data import scale
    from aepipe.errors import ConfigError
    from aepipe.limits import check_output
    from aepipe.tracking.store import check_run_id
    from aepipe.training.device import select_device

    check_run_id(run_id)  # before any file is read
    check_output(output, "-o")
    raw = check_rows(load_npy(input_path, str(input_path)), str(input_path))
    y_raw = load_npy(labels, f"--labels {labels}") if labels is not None else None
    dev = select_device(device)
    model = load_run_model(run_id, device=str(dev))
    check_width(raw, model.meta["input_dim"], str(input_path), f"run {run_id}")
    value_range = tuple(model.meta["value_range"])
    x = raw.reshape(len(raw), -1).astype(np.float32) if scaled else scale(raw, value_range)
    y = None
    if model.spec.conditional:
        if y_raw is None:
            raise ConfigError(f"run {run_id} is conditional: give --labels LABELS.npy")
        y = torch.as_tensor(check_labels(y_raw, f"--labels {labels}", len(x), model.spec.n_classes), device=dev)
    return model, torch.as_tensor(x, device=dev), y, raw, value_range


_io_options = [
    click.argument("run_id"),
    click.argument("input_path", metavar="INPUT.npy", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
    click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .npy file."),
    click.option("--device", default="auto", help="auto, cpu, cuda, ..."),
    click.option("--scaled", is_flag=True, help="INPUT is already scaled to [0, 1] (default: raw units of the dataset)."),
    click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Labels .npy for conditional models."),
]


def _with_io_options(fn):
    for option in reversed(_io_options):
        fn = option(fn)
    return fn


@cli.command(context_settings=CONTEXT)
@_with_io_options
@click.option("--what", default="code", show_default=True, metavar="WHAT",
              help="code (the deterministic code), or what the run's bottleneck offers: mean, sample (one posterior draw), "
                   "indices (codeword or category indices)...")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1), help="Random seed (--what sample).")
def encode(run_id: str, input_path: Path, output: Path, device: str, scaled: bool, labels: Path | None, what: str, seed: int) -> None:
    """Encode INPUT.npy (raw units, as the dataset stores them) with RUN_ID's model; writes codes."""
    import numpy as np
    import torch

    model, x, y, _, _ = _array_io(run_id, input_path, output, device, scaled, labels)
    if what not in model.offers():
        from aepipe.errors import ConfigError

        raise ConfigError(f"--what {what}: run {run_id}'s bottleneck offers {', '.join(model.offers())}")
    torch.manual_seed(seed)
    with torch.no_grad():
        codes = model.represent(x, y, what).cpu().numpy()
    np.save(output, codes)
    click.echo(f"wrote {codes.shape[0]} {what} of size {codes.shape[1] if codes.ndim > 1 else 1} to {output}", err=True)


@cli.command(context_settings=CONTEXT)
@_with_io_options
def reconstruct(run_id: str, input_path: Path, output: Path, device: str, scaled: bool, labels: Path | None) -> None:
    """Reconstruct INPUT.npy with RUN_ID's model; output in the input's shape and units."""
    import numpy as np
    import torch

    model, x, y, raw, (lo, hi) = _array_io(run_id, input_path, output, device, scaled, labels)
    with torch.no_grad():
        recon = model(x, y).cpu().numpy().astype(np.float64)
    out = recon if scaled else lo + recon * (hi - lo)
    np.save(output, out.reshape(raw.shape))
    click.echo(f"wrote {len(out)} reconstructions to {output}", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting for every trial.")
@click.option("--study", "study_name", default=None, help="Study name (default: the pipeline file's name).")
@click.option("--storage", default=None, metavar="URL", envvar="AEPIPE_STORAGE", show_envvar=True,
              help="Optuna storage: journal:///path (default: ./mlruns/optuna.journal) or postgresql+psycopg://user:password@host/db "
                   "(prefer the environment variable, or PGPASSWORD, to keep a password out of the process list).")
@click.option("--n-trials", type=click.IntRange(min=1), default=None, help="Finished trials the study should hold (default: [tune] n_trials).")
@click.option("--n-workers", type=click.IntRange(1, 256), default=1, show_default=True, help="Worker processes on this machine (one per GPU where there are GPUs).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds after which no new trial starts.")
@click.option("--device", default=None, help="Device for every trial (default: train.device).")
@click.option("--summary", is_flag=True, help="Print the best trials of the study and exit; runs nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--worker", is_flag=True, hidden=True, help="Run as one of --n-workers' processes.")
def tune(pipeline: Path, overrides: tuple[str, ...], study_name: str | None, storage: str | None, n_trials: int | None,
         n_workers: int, timeout: float | None, device: str | None, summary: bool, as_json: bool, worker: bool) -> None:
    """Tune PIPELINE's [tune] search space with Optuna; every trial is an MLflow run nested
    under the study's parent run. Running it again resumes the study."""
    from aepipe import tune as tuning

    from aepipe import secrets
    from aepipe.errors import ConfigError

    secrets.remember(url=storage)
    secrets.check_url(storage, "--storage")
    if storage and storage.startswith("sqlite") and n_workers > 1:
        raise ConfigError("--storage sqlite:... is not safe for parallel workers (Optuna's advice); use the default "
                          "journal file (one machine) or postgresql+psycopg://... (many machines)")
    if worker:  # before anything slow: a command killed meanwhile is noticed at once
        tuning.stop_with_parent()
    if not summary:
        _check_writable("tune")
    pm = _plugin_manager()
    st = tuning.prepare(pm, pipeline, overrides, study_name, storage, n_trials)
    if timeout is not None:
        st.settings.timeout = timeout
    from aepipe.config import resolve

    base = resolve(pm, pipeline, overrides).settings.train
    epochs = base.epochs
    tuning.open_study(st, epochs, shared=True if (worker or n_workers > 1) else None)
    if summary:
        _print_study(st, as_json)
        return
    if threads := os.environ.get("AEPIPE_NUM_THREADS"):
        import torch

        torch.set_num_threads(int(threads))
    tuning.ensure_parent_run(st)
    echo = (lambda line: None) if as_json and not worker else (lambda line: click.echo(line, err=True))
    if not worker:
        healed = tuning.heal(st)
        if healed:
            click.echo(f"study '{st.name}': {healed} run(s) left RUNNING by a process that died marked KILLED", err=True)
        click.echo(f"study '{st.name}' in {tuning.mask_url(st.storage_url)}: {tuning.finished_count(st.study)} of "
                   f"{st.settings.n_trials} trials finished; MLflow parent run {st.parent_run_id}", err=True)
    from aepipe.training import Interrupted

    try:
        if n_workers > 1 and not worker:
            tuning.spawn_workers(pm, st, pipeline, overrides, n_workers, timeout, device, device or base.device, echo)
        else:
            tuning.run_worker(pm, st, device=device, echo=echo)
    except Interrupted as exc:
        if not worker:  # the command was stopped: so is the study's parent run, until it runs again
            from aepipe.tracking import default_tracker

            default_tracker().end_run(st.parent_run_id, "KILLED", str(exc))
        raise
    if worker:
        return
    if tuning.records_results(st):
        tuning.finish(st)
    else:
        click.echo(f"study '{st.name}' is complete; the command that ran its last trial records the results "
                   f"on MLflow run {st.parent_run_id}", err=True)
    _print_study(st, as_json)


def _print_study(st, as_json: bool) -> None:
    from aepipe import tune as tuning

    rows = tuning.summary_rows(st.study, st.settings.objective_metrics)
    states: dict[str, int] = {}
    for t in st.study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    if as_json:
        click.echo(json.dumps({"study": st.name, "parent_run_id": st.study.user_attrs.get(tuning.PARENT_ATTR),
                               "states": states, "best": rows}, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"study '{st.name}': " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
    columns = list(rows[0]) if rows else ["trial"]
    for col in columns:
        table.add_column(col, justify="right" if col not in ("run_id",) else "left")
    for row in rows:
        table.add_row(*(f"{v:.5g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=200).print(table)


@cli.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.option("-n", "count", default=10, show_default=True, type=click.IntRange(min=1), help="How many samples.")
@click.option("--label", type=int, default=None, help="Class to draw (conditional models; default: cycle through the classes).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .npy file.")
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write a PNG grid of the samples.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1), help="Random seed.")
@click.option("--device", default="auto", help="auto, cpu, cuda, ...")
@click.option("--scaled", is_flag=True, help="Write samples in [0, 1] (default: the dataset's raw units).")
@click.option("--sampler", "sampler_name", default=None, metavar="NAME",
              help="prior, the run's own [model.sampler], or one fitted by fit-sampler (default: the run's own, else its prior, "
                   "else N(0, I)).")
def sample(run_id: str, count: int, label: int | None, output: Path, grid: Path | None, seed: int, device: str, scaled: bool,
           sampler_name: str | None) -> None:
    """Draw codes through RUN_ID's sampler (its prior by default) and decode them."""
    import numpy as np
    import torch

    from aepipe.artifacts import load_run_model
    from aepipe.errors import ConfigError
    from aepipe.limits import check_fits, check_output
    from aepipe.tracking.store import check_run_id
    from aepipe.training.device import select_device

    check_run_id(run_id)
    check_output(output, "-o")
    check_output(grid, "--grid")
    dev = select_device(device)
    model = load_run_model(run_id, device=str(dev))
    # the codes, the decoded samples on the device and their float64 copy in memory
    check_fits(count * (model.spec.code_dim + 3 * model.meta["input_dim"]) * 8, f"-n {count}: {count:,} samples", dev,
               "draw fewer (several commands, or a smaller -n)")
    from aepipe.sampling import load_for_run

    sampler = load_for_run(run_id, model, sampler_name)
    classes = model.spec.n_classes
    y = None
    if label is not None:
        if not (model.spec.conditional or (model.prior is not None and model.prior.class_conditional)):
            raise ConfigError(f"--label: run {run_id} is not conditional; its samples take no label")
        if not 0 <= label < classes:
            raise ConfigError(f"--label {label}: no such class; run {run_id} has classes 0..{classes - 1}")
        y = torch.full((count,), label, dtype=torch.long, device=dev)
    elif model.spec.conditional:
        y = torch.arange(count, device=dev) % classes
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.sample(count, y, sampler).cpu().numpy().astype(np.float64)
    lo, hi = model.meta["value_range"]
    values = out if scaled else lo + out * (hi - lo)
    shape = model.meta.get("image_shape")
    np.save(output, values.reshape(count, *shape) if shape else values)
    if grid is not None:
        from aepipe import figures

        title = f"{count} samples of run {run_id[:8]}" + (f", class {label}" if label is not None else "")
        fig = figures.sample_grid(out, shape, title)
        fig.savefig(grid, dpi=100)
    click.echo(f"wrote {count} samples to {output}" + (f" and {grid}" if grid else ""), err=True)


@cli.command("fit-sampler", context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--sampler", "sampler_name", required=True, metavar="NAME", help="A registered sampler (aepipe plugins lists them).")
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="A setting of the sampler (components=20).")
@click.option("--device", default="auto", help="auto, cpu, cuda, ...")
def fit_sampler(run_id: str, sampler_name: str, overrides: tuple[str, ...], device: str) -> None:
    """Fit a sampler on RUN_ID's training codes and log it to the run (samplers/NAME/)."""
    from aepipe.sampling import fit_for_run
    from aepipe.tracking.store import check_run_id
    from aepipe.training.device import select_device

    check_run_id(run_id)
    metrics = fit_for_run(run_id, sampler_name, overrides, device=str(select_device(device)))
    shown = ", ".join(f"{k} = {v:.5g}" for k, v in metrics.items())
    click.echo(f"fitted sampler '{sampler_name}' on run {run_id}'s training codes" + (f" ({shown})" if shown else "")
               + f"; draw with: aepipe sample {run_id} --sampler {sampler_name} -n 16 -o samples.npy", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("a", metavar="A", type=click.Path(path_type=Path))
@click.argument("b", metavar="B", type=click.Path(path_type=Path))
@click.option("--features", default="inception", show_default=True,
              help="Feature space: inception (Inception-v3, comparable with published FIDs; needs aepipe[fid]) or domain "
                   "(the classifier aepipe trains on --dataset's training split, cached; compares runs, not papers).")
@click.option("--dataset", default=None, metavar="NAME",
              help="With --features domain: the dataset whose classifier gives the features (its default settings and "
                   "split); the images must have its shape.")
@click.option("--pipeline", "pipeline_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="With --features domain: the dataset of this pipeline file's [data] table (settings and split), "
                   "instead of --dataset.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fid(a: Path, b: Path, features: str, dataset: str | None, pipeline_file: Path | None, device: str, as_json: bool) -> None:
    """FID, KID, precision, recall, density and coverage between two sets of images, offline.

    A and B are folders of image files (PNG, JPEG, ...) or .npy arrays of values in [0, 1], shaped
    (N, C, H, W) or (N, H, W); A is taken as the real set."""
    from aepipe.errors import ConfigError
    from aepipe.evaluation.generation import METRICS, compare_image_sets

    if dataset is not None and pipeline_file is not None:
        raise ConfigError("--dataset and --pipeline both name a dataset; give one")
    table = None
    if pipeline_file is not None:
        from aepipe.config import read_pipeline_file

        table = read_pipeline_file(pipeline_file).get("data", {})
    elif dataset is not None:
        table = {"name": dataset}
    result = compare_image_sets(a, b, features=features, dataset=table, device=device, pm=_plugin_manager())
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['n_a']} images in A, {result['n_b']} in B; features: {features}"
               + (f" (classifier of dataset '{result['dataset']}')" if result["dataset"] else ""))
    for name in METRICS:
        click.echo(f"{name:<10} {result[name]:.6g}")


@cli.command(context_settings=CONTEXT)
@click.argument("targets", nargs=-1, metavar="[RUN_ID|STUDY]...")
@click.option("--experiment", "-e", "experiments", multiple=True, help="Only runs of this experiment (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
@click.option("--columns", default=None, metavar="LIST",
              help="Comma-separated columns to show, in order (variant, dataset, run_id, test_*, eval_*, train_seconds, epochs); "
                   "default: the fixed ones and every eval_ metric the runs have.")
def compare(targets: tuple[str, ...], experiments: tuple[str, ...], fmt: str, columns: str | None) -> None:
    """Runs side by side: given runs, each study's best trial, or the latest run of each variant."""
    from aepipe.compare import collect, render

    rows = collect(list(targets), list(experiments))
    if not rows:
        from aepipe.errors import RunNotFoundError

        raise RunNotFoundError("no finished aepipe runs to compare")
    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    click.echo(render(rows, fmt, chosen), nl=False)


@cli.command(context_settings=CONTEXT)
@click.argument("targets", nargs=-1, metavar="[RUN_ID|STUDY|EXPERIMENT]...")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The HTML file to write.")
@click.option("--experiment", "-e", "experiments", multiple=True, help="With no TARGET: the latest run of each variant here (repeatable).")
@click.option("--pareto", default=None, metavar="X,Y", help="Two metrics for the Pareto plot (default: eval_fid,eval_mse where the runs "
              "have them, else test_neg_elbo,test_mse, test_kl,test_recon, ...).")
@click.option("--device", default="auto", help="auto, cpu, cuda, ... (to draw the figures).")
@click.option("--no-log", "no_log", is_flag=True, help="Only write the file; keep no copy in MLflow.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def report(targets: tuple[str, ...], output: Path, experiments: tuple[str, ...], pareto: str | None, device: str, no_log: bool,
           quiet: bool) -> None:
    """One self-contained HTML page comparing runs: runs by id, every finished trial of a study, the
    latest run of each variant of an experiment. Also logged to MLflow (a study's parent run, else
    a run named 'report' in the experiment)."""
    from aepipe.evaluation.report import build_report

    echo = (lambda line: None) if quiet else (lambda line: click.echo(_masked(line), err=True))
    path = build_report(targets, output, experiments, pareto=pareto, device=device, log=not no_log, echo=echo)
    click.echo(str(path))


@cli.command(context_settings=CONTEXT)
@click.option("--data", "dataset", default="digits", show_default=True, help="Dataset every variant trains on.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1), help="Epochs for every variant.")
@click.option("--experiment", default="zoo", show_default=True)
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="A setting for every variant.")
@click.option("--only", default=None, metavar="LIST", help="Comma-separated variants (default: every registered one).")
@click.option("--evaluate", "evaluate_", is_flag=True, help="Also compute every eval_* metric that applies (aepipe evaluate) for each run.")
@click.option("--features", default=None, metavar="LIST", help="With --evaluate: feature spaces (domain, inception).")
@click.option("--samples", type=click.IntRange(10, 1_000_000), default=None, help="With --evaluate: generated images per run (default 2000).")
@click.option("--iw-samples", type=click.IntRange(1, 100_000), default=None, help="With --evaluate: importance samples K (default 1000).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
def zoo(dataset: str, epochs: int, experiment: str, overrides: tuple[str, ...], only: str | None, evaluate_: bool,
        features: str | None, samples: int | None, iw_samples: int | None, fmt: str) -> None:
    """Train every registered variant on the same data and budget, then compare them."""
    from aepipe.compare import collect, render
    from aepipe.zoo import run_zoo

    _check_writable("zoo")
    evaluation = None
    if evaluate_:
        from aepipe.evaluation.run import settings

        evaluation = settings(features=[f.strip() for f in features.split(",") if f.strip()] if features else None,
                              samples=samples, iw_samples=iw_samples)
    variants = [v.strip() for v in only.split(",") if v.strip()] if only else None
    result = run_zoo(dataset, epochs, experiment, overrides, variants, evaluation, _plugin_manager(),
                     echo=lambda line: click.echo(line, err=True))
    click.echo(f"{len(result.runs)} variants in {result.seconds:.0f}s", err=True)
    if not result.runs:  # collect([]) would show the store's other runs
        from aepipe.errors import ConfigError

        raise ConfigError(f"no variant trained on dataset '{dataset}': each was skipped (the reasons are above)")
    click.echo(render(collect(list(result.runs.values()), []), fmt), nl=False)


@cli.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind: loopback unless --expose.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--expose", is_flag=True, help="Allow a --host beyond loopback: turns on MLflow's login (basic-auth; first start: "
              "MLFLOW_AUTH_ADMIN_PASSWORD) and allows only the --host and --allowed-host addresses.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="With --expose: a name or IP clients use to reach the UI (repeatable; needed for --host 0.0.0.0).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Server processes (default: one per two CPUs, at most 4).")
def ui(host: str, port: int, expose: bool, allowed_hosts: tuple[str, ...], workers: int | None) -> None:
    """Start the MLflow UI over aepipe's tracking store (on this machine only, unless --expose)."""
    from aepipe import ui as server

    code = server.serve(host, port, expose, allowed_hosts, workers, echo=lambda line: click.echo(_masked(line), err=True))
    _exit_now(code)  # the server has stopped: no second or two tearing down MLflow's modules


@cli.command(context_settings=CONTEXT)
@click.argument("targets", nargs=-1, required=True, metavar="RUN_ID|STUDY|EXPERIMENT...")
@click.option("--metrics", default=None, metavar="LIST",
              help="Comma-separated groups (reconstruction, likelihood, representation, generation, disentanglement) "
                   "or metrics (fid, mig, ...); default: every group that applies.")
@click.option("--samples", type=click.IntRange(10, 1_000_000), default=None, help="Generated images per sampler (default 2000).")
@click.option("--features", default=None, metavar="LIST", help="Feature spaces of the generation metrics: domain (default), inception.")
@click.option("--sampler", "samplers", multiple=True, metavar="NAME",
              help="Also measure generation through this sampler (repeatable; fitted on the training codes if the run has none).")
@click.option("--iw-samples", type=click.IntRange(1, 100_000), default=None, help="Importance samples K for eval_iw_nll (default 1000).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Seed of every random draw (default 0).")
@click.option("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics of every run as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate(targets: tuple[str, ...], metrics: str | None, samples: int | None, features: str | None, samplers: tuple[str, ...],
             iw_samples: int | None, seed: int | None, device: str, as_json: bool, quiet: bool) -> None:
    """Compute the eval_* metrics of finished runs (a study's trials, an experiment's runs) and log them to each run.

    Results are kept with the run by settings: the same call again reads them back."""
    from aepipe.evaluation.run import evaluate as run_evaluation, settings

    def items(text: str | None) -> list[str] | None:
        return None if text is None else [t.strip() for t in text.split(",") if t.strip()]

    _check_writable("evaluate")
    from aepipe.errors import ConfigError
    from aepipe.training.device import select_device

    try:  # here, not after a cache hit or a first run's evaluation; its message names the pipeline setting
        select_device(device)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("train.device:", "--device:")) from None
    s = settings(metrics=items(metrics), samples=samples, features=items(features), samplers=list(samplers) or None,
                 iw_samples=iw_samples, seed=seed)
    results = run_evaluation(list(targets), s, device=device, progress=not quiet and not as_json and sys.stderr.isatty())
    if as_json:
        click.echo(json.dumps({r.run_id: r.metrics for r in results}, indent=2, sort_keys=True))
        return
    for r in results:
        how = "cached" if r.cached else f"{r.seconds:.1f}s"
        click.echo(f"{r.run_id} ({how})")
        for name, value in sorted(r.metrics.items()):
            click.echo(f"  {name:32s} {value:.6g}")
        for group, why in r.skipped.items():
            click.echo(f"  {group}: not measured: {why}")


def _add_plugin_commands(group: click.Group) -> None:
    """Let plugins add commands; a broken plugin is reported by the command that needs it."""
    from aepipe.errors import PluginError

    try:
        pm = _plugin_manager()
        pm.call_plugin_hook("aepipe_cli_commands", cli=group)
    except PluginError:
        pass


def main() -> None:
    from aepipe import secrets

    secrets.remember_environment()
    secrets.install()
    _one_line_warnings()
    _add_plugin_commands(cli)
    try:
        cli(prog_name="aepipe")
    except SystemExit as exc:
        if "torch" not in sys.modules:  # a light command (--help, plugins): the usual exit is quick
            raise
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            click.echo(exc.code, err=True)
        _exit_now(code)


def _exit_now(code: int) -> None:
    """Exit without tearing the interpreter down: once torch and MLflow are loaded, freeing
    every module's objects one by one takes 1-2 s and does nothing a finished command needs.
    Exit handlers still run and every stream is flushed first."""
    import atexit
    import logging

    atexit._run_exitfuncs()  # the handlers registered by aepipe's libraries (CPython's own API)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
