"""Commands on arrays through a stored run's model: ``encode``, ``reconstruct``, ``sample`` and ``fit-sampler``."""

from __future__ import annotations

from pathlib import Path

import click

from aepipe.cli.group import CONTEXT, cli

_io_options = [
    click.argument("run_id"),
    click.argument("input_path", metavar="INPUT.npy", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
    click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                 help="Output .npy file."),
    click.option("--device", default="auto", help="auto, cpu, cuda, ..."),
    click.option("--scaled", is_flag=True,
                 help="INPUT is already scaled to [0, 1] (default: raw units of the dataset)."),
    click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="Labels .npy for conditional models."),
]


def _with_io_options(fn):
    for option in reversed(_io_options):
        fn = option(fn)
    return fn


@cli.command("encode", context_settings=CONTEXT)
@_with_io_options
@click.option("--what", default="code", show_default=True, metavar="WHAT",
              help="code (the deterministic code), or what the run's bottleneck offers: mean, sample (one posterior "
                   "draw), indices (codeword or category indices)...")
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1), help="Random seed (--what sample)."
)
def encode_command(
    run_id: str, input_path: Path, output: Path, device: str, scaled: bool, labels: Path | None, what: str, seed: int
) -> None:
    """Encode INPUT.npy (raw units, as the dataset stores them) with RUN_ID's model; writes codes."""
    from aepipe.usecases.arrays import encode as run_encode

    out = run_encode(run_id, input_path, output, device, scaled, labels, what, seed)
    click.echo(f"wrote {out.count} {what} of size {out.shape[1] if len(out.shape) > 1 else 1} to {output}", err=True)


@cli.command("reconstruct", context_settings=CONTEXT)
@_with_io_options
def reconstruct_command(
    run_id: str, input_path: Path, output: Path, device: str, scaled: bool, labels: Path | None
) -> None:
    """Reconstruct INPUT.npy with RUN_ID's model; output in the input's shape and units."""
    from aepipe.usecases.arrays import reconstruct as run_reconstruct

    out = run_reconstruct(run_id, input_path, output, device, scaled, labels)
    click.echo(f"wrote {out.count} reconstructions to {output}", err=True)


@cli.command("sample", context_settings=CONTEXT)
@click.argument("run_id")
@click.option("-n", "count", default=10, show_default=True, type=click.IntRange(min=1), help="How many samples.")
@click.option(
    "--label", type=int, default=None, help="Class to draw (conditional models; default: cycle through the classes)."
)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .npy file."
)
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG grid of the samples.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1), help="Random seed.")
@click.option("--device", default="auto", help="auto, cpu, cuda, ...")
@click.option("--scaled", is_flag=True, help="Write samples in [0, 1] (default: the dataset's raw units).")
@click.option("--sampler", "sampler_name", default=None, metavar="NAME",
              help="prior, the run's own [model.sampler], or one fitted by fit-sampler (default: the run's own, else "
                   "its prior, else N(0, I)).")
def sample_command(run_id: str, count: int, label: int | None, output: Path, grid: Path | None, seed: int, device: str,
                   scaled: bool, sampler_name: str | None) -> None:
    """Draw codes through RUN_ID's sampler (its prior by default) and decode them."""
    from aepipe.usecases.arrays import sample as run_sample

    run_sample(run_id, count, output, label, grid, seed, device, scaled, sampler_name)
    click.echo(f"wrote {count} samples to {output}" + (f" and {grid}" if grid else ""), err=True)


@cli.command("fit-sampler", context_settings=CONTEXT)
@click.argument("run_id")
@click.option(
    "--sampler", "sampler_name", required=True, metavar="NAME", help="A registered sampler (aepipe plugins lists them)."
)
@click.option(
    "--set", "-s", "overrides", multiple=True, metavar="KEY=VALUE", help="A setting of the sampler (components=20)."
)
@click.option("--device", default="auto", help="auto, cpu, cuda, ...")
def fit_sampler_command(run_id: str, sampler_name: str, overrides: tuple[str, ...], device: str) -> None:
    """Fit a sampler on RUN_ID's training codes and log it to the run (samplers/NAME/)."""
    from aepipe.usecases.arrays import fit_sampler as run_fit

    metrics = run_fit(run_id, sampler_name, overrides, device)
    shown = ", ".join(f"{k} = {v:.5g}" for k, v in metrics.items())
    click.echo(f"fitted sampler '{sampler_name}' on run {run_id}'s training codes" + (f" ({shown})" if shown else "")
               + f"; draw with: aepipe sample {run_id} --sampler {sampler_name} -n 16 -o samples.npy", err=True)
