"""Commands that put runs side by side: ``compare`` (a table), ``report`` (an HTML page) and ``zoo`` (every
variant trained, then compared)."""

from __future__ import annotations

from pathlib import Path

import click

from aepipe.cli import group as cli_group
from aepipe.cli.group import CONTEXT, cli
from aepipe.console import masked


@cli.command("compare", context_settings=CONTEXT)
@click.argument("targets", nargs=-1, metavar="[RUN_ID|STUDY]...")
@click.option("--experiment", "-e", "experiments", multiple=True, help="Only runs of this experiment (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
@click.option(
    "--columns",
    default=None,
    metavar="LIST",
    help="Comma-separated columns to show, in order (variant, dataset, run_id, test_*, eval_*, train_seconds, epochs); "
    "default: the fixed ones and every eval_ metric the runs have.",
)
@click.option(
    "--per-run",
    is_flag=True,
    help="One row per run: runs of one pipeline over seeds are not merged into mean ± interval.",
)
@click.option(
    "--no-reference", is_flag=True, help="No reference row (real data against real data) under generation metrics."
)
def compare_command(targets: tuple[str, ...], experiments: tuple[str, ...], fmt: str, columns: str | None,
                    per_run: bool, no_reference: bool) -> None:
    """Runs side by side: given runs, each study's best trial, or the latest run of each variant
    (with its other seeds). Runs that differ only in their seed are one row: mean ± the half-width
    of the 95% interval over seeds. Under generation metrics, a reference row: real test data
    against as many other real rows, in the same feature space (the floor a perfect generator would score)."""
    from aepipe.compare import collect, render

    rows = collect(list(targets), list(experiments), group=not per_run, references=not no_reference,
                   pm=None if no_reference else cli_group.plugin_manager(),
                   echo=lambda line: click.echo(line, err=True))
    if not rows:
        from aepipe.errors import RunNotFoundError

        raise RunNotFoundError("no finished aepipe runs to compare")
    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    click.echo(render(rows, fmt, chosen), nl=False)


@cli.command("report", context_settings=CONTEXT)
@click.argument("targets", nargs=-1, metavar="[RUN_ID|STUDY|EXPERIMENT]...")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The HTML file to write."
)
@click.option("--experiment", "-e", "experiments", multiple=True,
              help="With no TARGET: the latest run of each variant here (repeatable).")
@click.option("--pareto", default=None, metavar="X,Y",
              help="Two metrics for the Pareto plot (default: eval_fid,eval_mse where the runs "
              "have them, else test_neg_elbo,test_mse, test_kl,test_recon, ...).")
@click.option("--device", default="auto", help="auto, cpu, cuda, ... (to draw the figures).")
@click.option("--no-log", "no_log", is_flag=True, help="Only write the file; keep no copy in MLflow.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@click.option("--per-run", is_flag=True, help="One table row per run: runs of one pipeline over seeds are not merged.")
@click.option("--no-reference", is_flag=True, help="No reference row (real data against real data) in the table.")
def report_command(targets: tuple[str, ...], output: Path, experiments: tuple[str, ...], pareto: str | None,
                   device: str, no_log: bool, quiet: bool, per_run: bool, no_reference: bool) -> None:
    """One self-contained HTML page comparing runs: runs by id, every finished trial of a study, the
    latest run of each variant of an experiment. Also logged to MLflow (a study's parent run, else
    a run named 'report' in the experiment)."""
    from aepipe.evaluation.report import build_report

    echo = (lambda line: None) if quiet else (lambda line: click.echo(masked(line), err=True))
    path = build_report(targets, output, experiments, pareto=pareto, device=device, log=not no_log, echo=echo,
                        group=not per_run, references=not no_reference)
    click.echo(str(path))


@cli.command("zoo", context_settings=CONTEXT)
@click.option("--data", "dataset", default="digits", show_default=True, help="Dataset every variant trains on.")
@click.option("--epochs", default=200, show_default=True, type=click.IntRange(min=1),
              help="Most epochs for every variant: each trains until its validation loss stops improving (--patience).")
@click.option("--patience", default=10, show_default=True, type=click.IntRange(min=0),
              help="Epochs without improvement of the validation loss before a variant stops (0: always --epochs).")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Runs per variant, seeds train.seed, train.seed + 1, ...; the table shows mean ± 95% interval over "
                   "them.")
@click.option("--experiment", default="zoo", show_default=True)
@click.option("--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="A setting for every variant.")
@click.option("--only", default=None, metavar="LIST", help="Comma-separated variants (default: every registered one).")
@click.option("--evaluate", "evaluate_", is_flag=True,
              help="Also compute every eval_* metric that applies (aepipe evaluate) for each run.")
@click.option("--features", default=None, metavar="LIST", help="With --evaluate: feature spaces (domain, inception).")
@click.option("--samples", type=click.IntRange(10, 1_000_000), default=None,
              help="With --evaluate: generated images per run (default 2000).")
@click.option("--iw-samples", type=click.IntRange(1, 100_000), default=None,
              help="With --evaluate: importance samples K (default 1000).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "csv"]), default="text", show_default=True)
def zoo_command(dataset: str, epochs: int, patience: int, seeds: int, experiment: str, overrides: tuple[str, ...],
                only: str | None,
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
    result = run_zoo(dataset, epochs, experiment, overrides, variants, evaluation, cli_group.plugin_manager(),
                     echo=lambda line: click.echo(line, err=True), patience=patience, seeds=seeds)
    click.echo(f"{len(result.runs)} variants in {result.seconds:.0f}s", err=True)
    if not result.runs:  # collect([]) would show the store's other runs
        from aepipe.errors import ConfigError

        raise ConfigError(f"no variant trained on dataset '{dataset}': each was skipped (the reasons are above)")
    ids = [r for runs in result.seed_runs.values() for r in runs]
    click.echo(
        render(collect(ids, [], pm=cli_group.plugin_manager(), echo=lambda line: click.echo(line, err=True)), fmt),
        nl=False,
    )
