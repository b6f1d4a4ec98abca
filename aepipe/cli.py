"""The ``aepipe`` command line (click). Heavy packages are imported inside commands only."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from aepipe.version import __version__
from aepipe.errors import AepipeError
from aepipe.console import Reporter as _Reporter, masked as _masked, notes as _notes, one_line_warnings as _one_line_warnings

CONTEXT = {"help_option_names": ["-h", "--help"]}


#: the libraries between aepipe and a tracking store: their errors mean the store failed
STORE_LIBRARIES = {"mlflow", "sqlalchemy", "requests", "urllib3", "psycopg", "alembic"}


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
        except (SystemExit, GeneratorExit) as exc:  # aepipe's commands never end this way: a plugin's code did
            if ctx.obj and ctx.obj.get("debug") or ctx.invoked_subcommand in _PLUGIN_COMMANDS:
                raise  # a plugin's own command may end as it likes
            from aepipe.plugin_isolation import describe_exception

            info = _plugin_manager().blame(exc)
            who = info.describe() if info else "code called by the command"
            click.echo(f"Error: {_masked(who)} raised {describe_exception(exc)}", err=True)
            ctx.exit(2)
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
            from aepipe.tracking.error_line import error_line
            from aepipe.tracking.health import DAMAGED, recovery_hint
            from aepipe.tracking.store import tracking_uri

            line = error_line(exc)[:600]  # the root cause, not SQLAlchemy's framing
            hint = f"; {recovery_hint()}" if DAMAGED.search(line) else ""
            click.echo(f"Error: the tracking store {_masked(tracking_uri())} failed: {type(exc).__name__}: "
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


def _plugin_manager():
    from aepipe.plugins import get_plugin_manager

    return get_plugin_manager()


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
@click.option("--seeds", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Train the pipeline this many times, train.seed = its seed, seed + 1, ... (one run each, tagged "
                   "aepipe.seed and aepipe.group; compare and report show them as one row).")
def train(pipeline: Path | None, overrides: tuple[str, ...], device: str | None, resume: str | None, as_json: bool, quiet: bool,
          nproc: int, seeds: int) -> None:
    """Train PIPELINE (a TOML file) as one MLflow run; prints the run id. Ctrl-C or SIGTERM stops
    it between two batches with a checkpoint, and prints the command that continues it."""
    from aepipe.usecases.train import is_leader, seed_overrides, train as run_training, train_on_processes

    if nproc > 1 and seeds == 1:
        train_on_processes(nproc, pipeline, overrides, device, resume, as_json, quiet)
        return
    leader, summaries = is_leader(), []  # under a launcher, one process reports
    for extra in seed_overrides(pipeline, overrides, seeds, resume, nproc, _plugin_manager()) if seeds > 1 else [overrides]:
        # with --json, stdout holds the JSON alone: whatever a plugin or library prints goes to stderr
        with _Reporter(not quiet and leader) as reporter, _notes(not quiet and leader), \
                contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            result = run_training(pipeline, overrides=tuple(extra), device=device, resume=resume, reporter=reporter)
        if not leader:
            return
        summaries.append(result.summary())
        if not as_json:
            shown = {k: v for k, v in result.metrics.items() if k in ("test_loss", "test_recon", "test_mse")}
            click.echo(f"{f'seed {extra[-1][11:]}: ' if seeds > 1 else ''}finished {result.epochs} epochs"
                       f"{' (stopped early)' if result.stopped_early else ''} in {result.seconds:.1f}s: "
                       + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()), err=True)
            click.echo(result.run_id)
    if as_json:
        click.echo(json.dumps(summaries if seeds > 1 else summaries[0], indent=2))


@cli.command(name="new-plugin", context_settings=CONTEXT)
@click.argument("name")
@click.option("--dir", "parent", default=".", type=click.Path(file_okay=False, path_type=Path), help="Where to create it.")
def new_plugin(name: str, parent: Path) -> None:
    """Write a ready plugin distribution NAME (pyproject with the entry point, a component, a
    variant, a pipeline file and tests using aepipe.testing)."""
    from aepipe.template import write

    root = write(name, parent)
    click.echo(f"wrote {root}; next: cd {root} && pip install -e . && aepipe plugins && python -m pytest", err=True)


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--check", is_flag=True, help="Validate every plugin: hooks known, components pass the conformance suite.")
@click.option("--plugin", "only", default=None, help="With --check: only this plugin (entry-point name).")
def plugins(as_json: bool, check: bool, only: str | None) -> None:
    """List installed plugins: distribution, version, hooks and components."""
    from aepipe.usecases.plugins import check as check_plugins, listing

    pm = _plugin_manager()
    if check:
        click.echo(check_plugins(pm, only, echo=lambda line: click.echo(line, err=True)), err=True)
        return
    rows = listing(pm)
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
    from aepipe.usecases.arrays import encode as run_encode

    out = run_encode(run_id, input_path, output, device, scaled, labels, what, seed)
    click.echo(f"wrote {out.count} {what} of size {out.shape[1] if len(out.shape) > 1 else 1} to {output}", err=True)


@cli.command(context_settings=CONTEXT)
@_with_io_options
def reconstruct(run_id: str, input_path: Path, output: Path, device: str, scaled: bool, labels: Path | None) -> None:
    """Reconstruct INPUT.npy with RUN_ID's model; output in the input's shape and units."""
    from aepipe.usecases.arrays import reconstruct as run_reconstruct

    out = run_reconstruct(run_id, input_path, output, device, scaled, labels)
    click.echo(f"wrote {out.count} reconstructions to {output}", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting for every trial.")
@click.option("--study", "study_name", default=None,
              help="Study name, also its best model's in the Model Registry (default: [tune] study, else the experiment and "
                   "the file's name, e.g. 'myexp-pipeline', or the file's name alone where the experiment is named like it).")
@click.option("--allow-new-space", is_flag=True, help="Go on with an existing study whose [tune.space] changed (recorded on its "
                                                      "parent run); a changed objective or pipeline never joins a study.")
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
def tune(pipeline: Path, overrides: tuple[str, ...], study_name: str | None, allow_new_space: bool, storage: str | None,
         n_trials: int | None, n_workers: int, timeout: float | None, device: str | None, summary: bool, as_json: bool,
         worker: bool) -> None:
    """Tune PIPELINE's [tune] search space with Optuna; every trial is an MLflow run nested
    under the study's parent run. Running it again resumes the study."""
    from aepipe.usecases import tune as tuning

    if summary:
        st = tuning.open_study(pipeline, overrides, study_name, storage, n_trials, timeout,
                               shared=True if (worker or n_workers > 1) else None, allow_new_space=allow_new_space)
    else:
        echo = (lambda line: None) if as_json and not worker else (lambda line: click.echo(line, err=True))
        st = tuning.tune(pipeline, overrides, study_name, storage, n_trials, n_workers, timeout, device, worker, echo,
                         allow_new_space=allow_new_space)
    if st is not None:
        _print_study(tuning.summary(st), as_json)


def _print_study(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    rows = summary["best"]
    table = Table(title=f"study '{summary['study']}': " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary["states"].items())))
    # trials of a space with choices hold different parameters: a column for each key of any row, blank where a row lacks it
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["trial"]
    columns = [c for c in columns if c not in ("seconds", "run_id")] + [c for c in ("seconds", "run_id") if c in columns]
    for col in columns:
        table.add_column(col, justify="right" if col not in ("run_id",) else "left")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else f"{row[c]:.5g}" if isinstance(row[c], float) else str(row[c])
                        for c in columns))
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
    from aepipe.usecases.arrays import sample as run_sample

    run_sample(run_id, count, output, label, grid, seed, device, scaled, sampler_name)
    click.echo(f"wrote {count} samples to {output}" + (f" and {grid}" if grid else ""), err=True)


@cli.command("fit-sampler", context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--sampler", "sampler_name", required=True, metavar="NAME", help="A registered sampler (aepipe plugins lists them).")
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="A setting of the sampler (components=20).")
@click.option("--device", default="auto", help="auto, cpu, cuda, ...")
def fit_sampler(run_id: str, sampler_name: str, overrides: tuple[str, ...], device: str) -> None:
    """Fit a sampler on RUN_ID's training codes and log it to the run (samplers/NAME/)."""
    from aepipe.usecases.arrays import fit_sampler as run_fit

    metrics = run_fit(run_id, sampler_name, overrides, device)
    shown = ", ".join(f"{k} = {v:.5g}" for k, v in metrics.items())
    click.echo(f"fitted sampler '{sampler_name}' on run {run_id}'s training codes" + (f" ({shown})" if shown else "")
               + f"; draw with: aepipe sample {run_id} --sampler {sampler_name} -n 16 -o samples.npy", err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("a", metavar="A", type=click.Path(path_type=Path))
@click.argument("b", metavar="B", type=click.Path(path_type=Path))
@click.option("--features", default=None,
              help="Feature space: domain (the default, as for evaluate: the feature network aepipe trains on --dataset's "
                   "training split, cached; compares runs, not papers) or inception (Inception-v3, comparable with "
                   "published FIDs; needs aepipe[fid]).")
@click.option("--dataset", default=None, metavar="NAME",
              help="With --features domain: the dataset whose classifier gives the features (its default settings and "
                   "split); the images must have its shape.")
@click.option("--pipeline", "pipeline_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="With --features domain: the dataset of this pipeline file's [data] table (settings and split), "
                   "instead of --dataset.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fid(a: Path, b: Path, features: str | None, dataset: str | None, pipeline_file: Path | None, device: str, as_json: bool) -> None:
    """FID, KID, precision, recall, density and coverage between two sets of images, offline.

    A and B are folders of image files (PNG, JPEG, ...) or .npy arrays of values in [0, 1], shaped
    (N, C, H, W) or (N, H, W); A is taken as the real set."""
    from aepipe.usecases.fid import DEFAULT_FEATURES, METRICS, fid as run_fid

    features = features or DEFAULT_FEATURES

    result = run_fid(a, b, features, dataset, pipeline_file, device, pm=_plugin_manager())
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['n_a']} images in A, {result['n_b']} in B; features: {features}"
               + (f" (classifier of dataset '{result['dataset']}')" if result["dataset"] else ""))
    for name in METRICS:
        click.echo(f"{name:<10} {result[name]:.6g}")


@cli.command(context_settings=CONTEXT)
@click.argument("dataset", metavar="DATASET")
@click.option("--features", "--space", "features", default=None, metavar="SPACE",
              help="Feature space to check (default: the one evaluate and fid use).")
@click.option("--n", "n", type=click.IntRange(20, 100_000), default=500, show_default=True,
              help="Images per rung and in the reference (at most half the held-out images).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True, help="Seed of the draws and degradations.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def calibrate(dataset: str, features: str | None, n: int, seed: int, device: str, fmt: str, as_json: bool) -> None:
    """The judge's ladder: DATASET's held-out images, degraded in known ways, scored like samples.

    Each rung (other real images, blur, noise, the mean image, one class only, a few images
    repeated, training copies, shuffled pixels) is compared with held-out reference images in a
    feature space; the real-against-real row is the floor any model's figure should be read against."""
    from aepipe.usecases.fid import DESCRIPTIONS, calibrate as run_calibrate, ladder_table

    result = run_calibrate(dataset, features, n, device, seed, pm=_plugin_manager())
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['n']} images per rung against {result['n']} held-out images of '{result['dataset']}'; "
               f"features: {result['features']}; blur sigma s = {result['blur_sigma']:.3g} pixels")
    click.echo(ladder_table(result["rungs"], fmt))
    if fmt == "text":
        click.echo("\n" + "\n".join(f"  {name:<13} {text}" for name, text in DESCRIPTIONS.items()))


@cli.command(context_settings=CONTEXT)
@click.argument("targets", nargs=-1, metavar="[RUN_ID|STUDY]...")
@click.option("--experiment", "-e", "experiments", multiple=True, help="Only runs of this experiment (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
@click.option("--columns", default=None, metavar="LIST",
              help="Comma-separated columns to show, in order (variant, dataset, run_id, test_*, eval_*, train_seconds, epochs); "
                   "default: the fixed ones and every eval_ metric the runs have.")
@click.option("--per-run", is_flag=True, help="One row per run: runs of one pipeline over seeds are not merged into mean ± interval.")
@click.option("--no-reference", is_flag=True, help="No reference row (real data against real data) under generation metrics.")
def compare(targets: tuple[str, ...], experiments: tuple[str, ...], fmt: str, columns: str | None, per_run: bool, no_reference: bool) -> None:
    """Runs side by side: given runs, each study's best trial, or the latest run of each variant
    (with its other seeds). Runs that differ only in their seed are one row: mean ± the half-width
    of the 95% interval over seeds. Under generation metrics, a reference row: real test data
    against as many other real rows, in the same feature space (the floor a perfect generator would score)."""
    from aepipe.compare import collect, render

    rows = collect(list(targets), list(experiments), group=not per_run, references=not no_reference,
                   pm=None if no_reference else _plugin_manager(), echo=lambda line: click.echo(line, err=True))
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
@click.option("--per-run", is_flag=True, help="One table row per run: runs of one pipeline over seeds are not merged.")
@click.option("--no-reference", is_flag=True, help="No reference row (real data against real data) in the table.")
def report(targets: tuple[str, ...], output: Path, experiments: tuple[str, ...], pareto: str | None, device: str, no_log: bool,
           quiet: bool, per_run: bool, no_reference: bool) -> None:
    """One self-contained HTML page comparing runs: runs by id, every finished trial of a study, the
    latest run of each variant of an experiment. Also logged to MLflow (a study's parent run, else
    a run named 'report' in the experiment)."""
    from aepipe.evaluation.report import build_report

    echo = (lambda line: None) if quiet else (lambda line: click.echo(_masked(line), err=True))
    path = build_report(targets, output, experiments, pareto=pareto, device=device, log=not no_log, echo=echo,
                        group=not per_run, references=not no_reference)
    click.echo(str(path))


@cli.command(context_settings=CONTEXT)
@click.option("--data", "dataset", default="digits", show_default=True, help="Dataset every variant trains on.")
@click.option("--epochs", default=200, show_default=True, type=click.IntRange(min=1),
              help="Most epochs for every variant: each trains until its validation loss stops improving (--patience).")
@click.option("--patience", default=10, show_default=True, type=click.IntRange(min=0),
              help="Epochs without improvement of the validation loss before a variant stops (0: always --epochs).")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Runs per variant, seeds train.seed, train.seed + 1, ...; the table shows mean ± 95% interval over them.")
@click.option("--experiment", default="zoo", show_default=True)
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="A setting for every variant.")
@click.option("--only", default=None, metavar="LIST", help="Comma-separated variants (default: every registered one).")
@click.option("--evaluate", "evaluate_", is_flag=True, help="Also compute every eval_* metric that applies (aepipe evaluate) for each run.")
@click.option("--features", default=None, metavar="LIST", help="With --evaluate: feature spaces (domain, inception).")
@click.option("--samples", type=click.IntRange(10, 1_000_000), default=None, help="With --evaluate: generated images per run (default 2000).")
@click.option("--iw-samples", type=click.IntRange(1, 100_000), default=None, help="With --evaluate: importance samples K (default 1000).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
def zoo(dataset: str, epochs: int, patience: int, seeds: int, experiment: str, overrides: tuple[str, ...], only: str | None,
        evaluate_: bool, features: str | None, samples: int | None, iw_samples: int | None, fmt: str) -> None:
    """Train every registered variant on the same data until it stops improving (early stopping,
    at most --epochs), over --seeds seeds, then compare them (with the reference row under
    generation metrics)."""
    from aepipe.compare import collect, render
    from aepipe.zoo import run_zoo

    evaluation = None
    if evaluate_:
        from aepipe.evaluation.run import settings

        evaluation = settings(features=[f.strip() for f in features.split(",") if f.strip()] if features else None,
                              samples=samples, iw_samples=iw_samples)
    variants = [v.strip() for v in only.split(",") if v.strip()] if only else None
    result = run_zoo(dataset, epochs, experiment, overrides, variants, evaluation, _plugin_manager(),
                     echo=lambda line: click.echo(line, err=True), patience=patience, seeds=seeds)
    click.echo(f"{len(result.runs)} variants in {result.seconds:.0f}s", err=True)
    if not result.runs:  # collect([]) would show the store's other runs
        from aepipe.errors import ConfigError

        raise ConfigError(f"no variant trained on dataset '{dataset}': each was skipped (the reasons are above)")
    ids = [r for runs in result.seed_runs.values() for r in runs]
    click.echo(render(collect(ids, [], pm=_plugin_manager(), echo=lambda line: click.echo(line, err=True)), fmt), nl=False)


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
@click.option("--bootstrap", type=click.IntRange(0, 10_000), default=None,
              help="Resamples of each generation metric's 95% bootstrap interval, logged as eval_<metric>_lo/_hi (default 100; 0: none).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Seed of every random draw (default 0).")
@click.option("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics of every run as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate(targets: tuple[str, ...], metrics: str | None, samples: int | None, features: str | None, samplers: tuple[str, ...],
             iw_samples: int | None, bootstrap: int | None, seed: int | None, device: str, as_json: bool, quiet: bool) -> None:
    """Compute the eval_* metrics of finished runs (a study's trials, an experiment's runs) and log them to each run.

    Results are kept with the run by settings: the same call again reads them back."""
    from aepipe.evaluation.run import evaluate as run_evaluation, settings

    def items(text: str | None) -> list[str] | None:
        return None if text is None else [t.strip() for t in text.split(",") if t.strip()]

    s = settings(metrics=items(metrics), samples=samples, features=items(features), samplers=list(samplers) or None,
                 iw_samples=iw_samples, bootstrap=bootstrap, seed=seed)
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

    before = set(group.commands)
    try:
        pm = _plugin_manager()
        pm.call_plugin_hook("aepipe_cli_commands", cli=group)
    except PluginError:
        pass
    _PLUGIN_COMMANDS.update(set(group.commands) - before)


#: the commands plugins added (``aepipe_cli_commands``): theirs to end as they like
_PLUGIN_COMMANDS: set[str] = set()


def main() -> None:
    import signal

    from aepipe import plugin_isolation, secrets

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Ctrl-C as ever, told from a plugin's raise
        signal.signal(signal.SIGINT, plugin_isolation.interrupt)
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
