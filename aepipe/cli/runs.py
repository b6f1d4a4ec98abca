"""Commands that train: ``train`` (one run, or one per seed) and ``tune`` (an Optuna study)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from aepipe.cli import group as cli_group
from aepipe.cli.group import CONTEXT, cli
from aepipe.console import Reporter, notes


@cli.command("train", context_settings=CONTEXT)
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. train.epochs=5 (repeatable).")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: train.device).")
@click.option("--resume", default=None, metavar="RUN_ID",
              help="Continue a stopped run from its checkpoint, with its own pipeline (PIPELINE and --set may only "
                   "raise train.epochs).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--nproc", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Processes that train this one model together (torch.distributed: gloo on CPU, NCCL with one GPU "
                   "each).")
@click.option("--seeds", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Train the pipeline this many times, train.seed = its seed, seed + 1, ... (one run each, tagged "
                   "aepipe.seed and aepipe.group; compare and report show them as one row).")
def train_command(pipeline: Path | None, overrides: tuple[str, ...], device: str | None, resume: str | None,
                  as_json: bool, quiet: bool, nproc: int, seeds: int) -> None:
    """Train PIPELINE (a TOML file) as one MLflow run; prints the run id. Ctrl-C or SIGTERM stops
    it between two batches with a checkpoint, and prints the command that continues it."""
    from aepipe.usecases.train import is_leader, seed_overrides, train_on_processes, train_pipeline

    if nproc > 1 and seeds == 1:
        train_on_processes(nproc, pipeline, overrides, device, resume, as_json, quiet)
        return
    leader, summaries = is_leader(), []  # under a launcher, one process reports
    for extra in (
        seed_overrides(pipeline, overrides, seeds, resume, nproc, cli_group.plugin_manager())
        if seeds > 1
        else [overrides]
    ):
        # with --json, stdout holds the JSON alone: whatever a plugin or library prints goes to stderr
        with Reporter(not quiet and leader) as reporter, notes(not quiet and leader), \
                contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            result = train_pipeline(pipeline, overrides=tuple(extra), device=device, resume=resume, reporter=reporter)
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


@cli.command("tune", context_settings=CONTEXT)
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a setting for every trial."
)
@click.option(
    "--study",
    "study_name",
    default=None,
    help="Study name, also its best model's in the Model Registry (default: [tune] study, else the experiment and "
    "the file's name, e.g. 'myexp-pipeline', or the file's name alone where the experiment is named like it).",
)
@click.option(
    "--allow-new-space",
    is_flag=True,
    help="Go on with an existing study whose [tune.space] changed (recorded on its "
    "parent run); a changed objective or pipeline never joins a study.",
)
@click.option("--storage", default=None, metavar="URL", envvar="AEPIPE_STORAGE", show_envvar=True,
              help="Optuna storage: journal:///path (default: ./mlruns/optuna.journal) or "
                   "postgresql+psycopg://user:password@host/db (prefer the environment variable, or PGPASSWORD, to "
                   "keep a password out of the process list).")
@click.option("--n-trials", type=click.IntRange(min=1), default=None,
              help="Finished trials the study should hold (default: [tune] n_trials).")
@click.option("--n-workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes on this machine (one per GPU where there are GPUs).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds after which no new trial starts.")
@click.option("--device", default=None, help="Device for every trial (default: train.device).")
@click.option("--summary", is_flag=True, help="Print the best trials of the study and exit; runs nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--worker", is_flag=True, hidden=True, help="Run as one of --n-workers' processes.")
def tune_command(pipeline: Path, overrides: tuple[str, ...], study_name: str | None, allow_new_space: bool,
                 storage: str | None,
         n_trials: int | None, n_workers: int, timeout: float | None, device: str | None, summary: bool, as_json: bool,
         worker: bool) -> None:
    """Tune PIPELINE's [tune] search space with Optuna; every trial is an MLflow run nested
    under the study's parent run. Running it again resumes the study."""
    from aepipe.usecases import tune as tuning

    if summary:
        st = tuning.open_pipeline_study(pipeline, overrides, study_name, storage, n_trials, timeout,
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
    table = Table(
        title=f"study '{summary['study']}': "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary["states"].items()))
    )
    # trials of a space with choices hold different parameters: a column for each key of any row, blank where a row
    # lacks it
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["trial"]
    columns = [c for c in columns if c not in ("seconds", "run_id")] + [
        c for c in ("seconds", "run_id") if c in columns
    ]
    for col in columns:
        table.add_column(col, justify="right" if col not in ("run_id",) else "left")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else f"{row[c]:.5g}" if isinstance(row[c], float) else str(row[c])
                        for c in columns))
    Console(width=200).print(table)
