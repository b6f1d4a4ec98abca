"""The ``zoo`` use case: every registered variant (or the ones named) trained on the same data
and budget, optionally evaluated (``eval_*``), so that one table compares them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class ZooResult:
    """The zoo's runs by variant (``runs``: the first seed's; ``seed_runs``: every seed's, in
    order), the variants skipped (and why) and the wall time."""

    runs: dict[str, str] = field(default_factory=dict)
    seed_runs: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def run_zoo(dataset: str = "digits", epochs: int = 200, experiment: str = "zoo",
            overrides: tuple[str, ...] | list[str] = (),
            variants: list[str] | None = None, evaluate: Any = None, pm: Any = None,
            echo: Callable[[str], None] = lambda line: None, patience: int = 10, seeds: int = 1) -> ZooResult:
    """Train each variant (all registered ones, or ``variants``) on ``dataset`` into
    ``experiment`` until it stops improving: early stopping on the validation loss after
    ``patience`` epochs without improvement (``train.patience``; 0: never), at most ``epochs``
    epochs, the best epoch's weights kept; ``seeds`` runs per variant (``train.seed`` = the
    pipeline's seed, its seed + 1, ...). With ``evaluate`` (an
    :class:`aepipe.config.EvaluateSettings`) compute its metrics for each run. A variant that
    cannot train on the data is skipped with the reason; ``echo`` gets one line per run."""
    from aepipe.config import resolve
    from aepipe.errors import AepipeError, ConfigError
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking.health import check_writable
    from aepipe.training import train

    check_writable("zoo")
    pm = pm or get_plugin_manager()
    known = pm.registry.names("variant")
    unknown = [v for v in variants or [] if v not in known]
    if unknown:
        raise ConfigError(f"--only: no variant named {', '.join(unknown)} (available: {', '.join(known)})")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give 1 or more")
    common = [f"data.name={json.dumps(dataset)}", f"train.epochs={epochs}", f"train.patience={patience}",
              f"tracking.experiment={json.dumps(experiment)}", *overrides]
    if evaluate is None:
        common.append("tracking.log_model=false")  # nothing reads the models back
    else:  # an unknown feature space or sampler fails now, not after the first variant's training
        for kind, names in (("feature", evaluate.features), ("sampler", evaluate.samplers)):
            for n in names:
                pm.registry.get(kind, n)
    result = ZooResult()
    started = time.perf_counter()
    for name in variants or known:
        try:
            base = resolve(pm, tree={"variant": name}, overrides=common).settings.train.seed
        except AepipeError as exc:
            result.skipped[name] = str(exc)
            echo(f"{name}: skipped: {exc}")
            continue
        for seed in range(base, base + seeds):
            label = name if seeds == 1 else f"{name} (seed {seed})"
            try:
                pipeline = resolve(pm, tree={"variant": name}, overrides=[*common, f"train.seed={seed}"])
                run = train(pipeline, pm)
            except AepipeError as exc:
                result.skipped[label] = str(exc)
                echo(f"{label}: skipped: {exc}")
                break  # another seed would fail the same way
            result.runs.setdefault(name, run.run_id)
            result.seed_runs.setdefault(name, []).append(run.run_id)
            line = (f"{label}: {run.metrics.get('test_mse', float('nan')):.4g} test mse after {run.epochs} epochs"
                    f"{' (stopped early)' if run.stopped_early else ''} in {run.seconds:.1f}s")
            if evaluate is not None:
                from aepipe.evaluation.run import chosen_groups, evaluate_run

                try:  # the run is kept (trained, logged) whatever its evaluation does
                    ev = evaluate_run(run.run_id, evaluate, chosen_groups(evaluate, everything=True), pm=pm)
                    line += f", evaluated in {ev.seconds:.1f}s"
                except AepipeError as exc:
                    line += f", not evaluated: {exc}"
            echo(line)
    result.seconds = time.perf_counter() - started
    return result
