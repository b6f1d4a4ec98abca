"""Commands that judge models: ``evaluate`` (the eval_* metrics of runs), ``fid`` (two sets of images) and
``calibrate`` (the judge's ladder)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from aepipe.cli import group as cli_group
from aepipe.cli.group import CONTEXT, cli


@cli.command("fid", context_settings=CONTEXT)
@click.argument("a", metavar="A", type=click.Path(path_type=Path))
@click.argument("b", metavar="B", type=click.Path(path_type=Path))
@click.option(
    "--features",
    default=None,
    help="Feature space: domain (the default, as for evaluate: the feature network aepipe trains on --dataset's "
    "training split, cached; compares runs, not papers) or inception (Inception-v3, comparable with "
    "published FIDs; needs aepipe[fid]).",
)
@click.option("--dataset", default=None, metavar="NAME",
              help="With --features domain: the dataset whose classifier gives the features (its default settings and "
                   "split); the images must have its shape.")
@click.option("--pipeline", "pipeline_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="With --features domain: the dataset of this pipeline file's [data] table (settings and split), "
                   "instead of --dataset.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def fid_command(
    a: Path, b: Path, features: str | None, dataset: str | None, pipeline_file: Path | None, device: str, as_json: bool
) -> None:
    """FID, KID, precision, recall, density and coverage between two sets of images, offline.

    A and B are folders of image files (PNG, JPEG, ...) or .npy arrays of values in [0, 1], shaped
    (N, C, H, W) or (N, H, W); A is taken as the real set."""
    from aepipe.usecases.fid import DEFAULT_FEATURES, METRICS, fid as run_fid

    features = features or DEFAULT_FEATURES

    result = run_fid(a, b, features, dataset, pipeline_file, device, pm=cli_group.plugin_manager())
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['n_a']} images in A, {result['n_b']} in B; features: {features}"
               + (f" (classifier of dataset '{result['dataset']}')" if result["dataset"] else ""))
    for name in METRICS:
        click.echo(f"{name:<10} {result[name]:.6g}")


@cli.command("calibrate", context_settings=CONTEXT)
@click.argument("dataset", metavar="DATASET")
@click.option("--features", "--space", "features", default=None, metavar="SPACE",
              help="Feature space to check (default: the one evaluate and fid use).")
@click.option("--n", "n", type=click.IntRange(20, 100_000), default=500, show_default=True,
              help="Images per rung and in the reference (at most half the held-out images).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the draws and degradations.")
@click.option("--seeds", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Draw the ladder at this many seeds (--seed, --seed + 1, ...): mean ± the half-width of the 95% "
                   "interval over them.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def calibrate_command(dataset: str, features: str | None, n: int, seed: int, seeds: int, device: str, fmt: str,
                      as_json: bool) -> None:
    """The judge's ladder: DATASET's held-out images, degraded in known ways, scored like samples.

    Each rung (other real images, blur, noise, the mean image, one class only, a few images
    repeated, training copies, shuffled pixels) is compared with held-out reference images in a
    feature space; the real-against-real row is the floor any model's figure should be read against."""
    from aepipe.usecases.fid import DESCRIPTIONS, calibrate as run_calibrate, ladder_table

    result = run_calibrate(dataset, features, n, device, seed, pm=cli_group.plugin_manager(), seeds=seeds)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['n']} images per rung against {result['n']} held-out images of '{result['dataset']}'; "
               f"features: {result['features']}; blur sigma s = {result['blur_sigma']:.3g} pixels")
    click.echo(ladder_table(result["rungs"], fmt, result.get("intervals")))
    if "seeds" in result:
        first, last = result["seeds"][0], result["seeds"][-1]
        click.echo(f"\na ± b: the mean over the ladder drawn at seeds {first}-{last} and the "
                   "half-width of its 95% t-interval over them (the same feature space)")
    if fmt == "text":
        click.echo("\n" + "\n".join(f"  {name:<13} {text}" for name, text in DESCRIPTIONS.items()))


@cli.command("evaluate", context_settings=CONTEXT)
@click.argument("targets", nargs=-1, required=True, metavar="RUN_ID|STUDY|EXPERIMENT...")
@click.option("--metrics", default=None, metavar="LIST",
              help="Comma-separated groups (reconstruction, likelihood, representation, generation, disentanglement) "
                   "or metrics (fid, mig, ...); default: every group that applies.")
@click.option(
    "--samples", type=click.IntRange(10, 1_000_000), default=None, help="Generated images per sampler (default 2000)."
)
@click.option("--features", default=None, metavar="LIST",
              help="Feature spaces of the generation metrics: domain (default), inception.")
@click.option("--sampler", "samplers", multiple=True, metavar="NAME",
              help="Also measure generation through this sampler (repeatable; fitted on the training codes if the run "
                   "has none).")
@click.option("--iw-samples", type=click.IntRange(1, 100_000), default=None,
              help="Importance samples K for eval_iw_nll (default 1000).")
@click.option("--bootstrap", type=click.IntRange(0, 10_000), default=None,
              help="Resamples of each generation metric's 95% bootstrap interval, logged as eval_<metric>_lo/_hi "
                   "(default 100; 0: none).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Seed of every random draw (default 0).")
@click.option("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics of every run as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate_command(targets: tuple[str, ...], metrics: str | None, samples: int | None, features: str | None,
                     samplers: tuple[str, ...],
             iw_samples: int | None, bootstrap: int | None, seed: int | None, device: str, as_json: bool,
             quiet: bool) -> None:
    """Compute the eval_* metrics of finished runs (a study's trials, an experiment's runs) and log them to each run.

    Results are kept with the run by settings: the same call again reads them back."""
    from aepipe.evaluation.run import evaluate as run_evaluation, settings

    def items(text: str | None) -> list[str] | None:
        return None if text is None else [t.strip() for t in text.split(",") if t.strip()]

    s = settings(metrics=items(metrics), samples=samples, features=items(features), samplers=list(samplers) or None,
                 iw_samples=iw_samples, bootstrap=bootstrap, seed=seed)
    results = run_evaluation(
        list(targets), s, device=device, progress=not quiet and not as_json and sys.stderr.isatty()
    )
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
