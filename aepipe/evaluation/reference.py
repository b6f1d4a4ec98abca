"""Reference rows: what real data scores against real data, in the same feature space, on the
same dataset and split, with the same number of rows as a run's generated samples.

A generation metric means little alone (is an FID of 230 good?). The reference row answers with
the floor: the test split (the real set every run's samples are compared with) against ``n``
other real rows of the same dataset (a seeded draw from its training and validation splits; all
of them where they hold fewer than ``n``), through the same functions as a run's samples
(:func:`aepipe.evaluation.generation.feature_space` and
:func:`~aepipe.evaluation.generation.generation_metrics`). A perfect generator would score about
this; a row far from it is far from the data.

Each reference is computed once per (dataset settings and split, feature space, ``n``) and kept
in the local store's ``references/`` folder (a JSON file named by a digest of what decides it);
nothing is logged to any run.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aepipe.evaluation import GROUPS, PREFIX, key, metric_of

#: bumped when what a reference measures changes: older cached references are not reused
VERSION = 1
FOLDER = "references"
BOUNDS = ("_lo", "_hi")


def parse(logged: str) -> tuple[str, str, str | None] | None:
    """(metric, feature space, sampler) of a logged generation metric (``eval_fid_inception.gmm``
    -> ``("fid", "inception", "gmm")``); None for any other key, or an interval's bound
    (``eval_fid_lo``)."""
    if not logged.startswith(PREFIX):
        return None
    base, _, sampler = logged.partition(".")
    metric = metric_of(base)
    if metric not in GROUPS["generation"]:
        return None
    rest = base[len(PREFIX) + len(metric):]
    if rest.endswith(BOUNDS):
        return None
    if rest and not rest.startswith("_"):
        return None
    return metric, (rest[1:] or _default_space()), (sampler or None)


def _default_space() -> str:
    from aepipe import evaluation  # read when called: the default may change

    return evaluation.DEFAULT_FEATURES


def _default_folder() -> Path:
    from aepipe.tracking.store import local_root

    return local_root() / FOLDER


def reference_metrics(table: dict[str, Any], space: str, n: int, device: Any = "cpu", pm: Any = None, seed: int = 0,
                      folder: Path | None = None) -> dict[str, Any]:
    """The generation metrics of the test split of the dataset that ``table`` (a pipeline's
    ``[data]`` table) names against ``n`` other real rows of it (seeded draw ``seed`` from its
    training and validation splits), in feature space ``space``: ``{"metrics": {"fid": ...},
    "n": rows used, "asked": n, "real": test rows, "seconds": ...}``. Read from the cache in
    ``folder`` (default: the store's ``references/``) where it was computed before."""
    import numpy as np
    import torch

    from aepipe.evaluation.generation import feature_space, generation_metrics
    from aepipe.evaluation.image_sets import load_dataset
    from aepipe.files import write_text
    from aepipe.plugins import get_plugin_manager

    pm = pm or get_plugin_manager()
    cls = pm.registry.get("feature", space)
    module = sys.modules.get(cls.__module__)
    identity = {"version": VERSION, "data": canonical(table, pm), "space": space, "n": int(n), "seed": int(seed),
                "space_class": f"{cls.__module__}.{cls.__qualname__}",
                "space_version": getattr(module, "VERSION", None)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = (folder or _default_folder()) / f"{digest}.json"
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(found, dict) and isinstance(found.get("metrics"), dict):
                return found
        except (OSError, ValueError):
            pass  # a damaged entry is computed again
    started = time.perf_counter()
    data = load_dataset(table, device, where="reference row", pm=pm)
    real = torch.cat([x for x, _ in data.test.batches(4096)])
    pool = len(data.train) + len(data.val)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, min(int(n), pool), replace=False))
    rows = []
    for split, positions in (
        (data.train, chosen[chosen < len(data.train)]),
        (data.val, chosen[chosen >= len(data.train)] - len(data.train)),
    ):
        for i in range(0, len(positions), 4096):
            rows.append(split.take(torch.as_tensor(positions[i: i + 4096], dtype=torch.long))[0])
    other = torch.cat(rows)
    features = feature_space(space, data, device, pm)
    values = generation_metrics(features.features(real), features.features(other))
    found = {**identity, "metrics": {k: float(v) for k, v in values.items()}, "n": int(len(other)), "asked": int(n),
             "real": int(len(real)), "dataset": data.name, "seconds": round(time.perf_counter() - started, 3)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(found, indent=2, sort_keys=True, default=str))
    return found


#: data settings that change how rows are read, not which rows each split holds
LOADING = ("in_memory", "memory_fraction", "workers", "prefetch")


def canonical(table: dict[str, Any], pm: Any) -> dict[str, Any]:
    """``table`` (a ``[data]`` table) with every default filled in and the loading settings
    left out: two tables that give the same splits give the same dict (as is, where it does not
    validate: loading it will say why)."""
    from pydantic import ValidationError

    from aepipe.config import DataSettings
    from aepipe.errors import AepipeError

    try:
        core = DataSettings.model_validate({k: v for k, v in table.items() if k in DataSettings.model_fields})
        config = pm.registry.get("dataset", core.name).Config.model_validate(
            {k: v for k, v in table.items() if k not in DataSettings.model_fields})
    except (ValidationError, AepipeError, AttributeError):
        return dict(table)
    found = {k: v for k, v in core.model_dump().items() if k not in LOADING}
    return {**found, "config": config.model_dump()}


@dataclass
class ReferenceRow:
    """One reference row of a table: the dataset, the rows of each set, and the value of every
    generation column of the table it fills (``eval_fid``, ``eval_fid_inception.gmm``...)."""

    dataset: str
    n: int  # real rows standing in for the samples (the runs' sample count, or all there are)
    asked: int  # the runs' sample count
    real: int  # test rows
    metrics: dict[str, float] = field(default_factory=dict)
    spaces: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        more = "" if self.n == self.asked else f" (all there are; the runs drew {self.asked})"
        return f"reference: real test ({self.real}) vs {self.n} real{more}"


def _run_spec(run: Any, client: Any) -> tuple[dict[str, Any], int] | None:
    """The ``[data]`` table of ``run`` (its logged ``pipeline.toml``) and the sample count of its
    generation metrics as logged (the ``aepipe evaluate`` record whose figures are the run's, else
    the pipeline's ``[evaluate] samples``); None where the run logged no pipeline (or one beyond the
    bounds of a pipeline file)."""
    from aepipe.config.stored import StoredPipeline

    with tempfile.TemporaryDirectory() as tmp:
        try:
            found = client.download_artifacts(run.info.run_id, "pipeline.toml", tmp)
            tree = StoredPipeline.read(found, f"run {run.info.run_id}: pipeline.toml").tree
        except Exception:  # noqa: BLE001 - a run without its pipeline simply gets no reference
            return None
        samples = int(tree.get("evaluate", {}).get("samples", 2000))
        logged = run.data.metrics
        try:
            records = [a.path for a in client.list_artifacts(run.info.run_id, "evaluation") if a.path.endswith(".json")]
        except Exception:  # noqa: BLE001
            records = []
        for item in records:
            try:
                record = json.loads(
                    Path(client.download_artifacts(run.info.run_id, item, tmp)).read_text(encoding="utf-8")
                )
                metrics, asked = record.get("metrics", {}), int(record["settings"]["samples"])
            except Exception:  # noqa: BLE001 - a damaged record says nothing
                continue
            if any(parse(k) and k in logged and logged[k] == v for k, v in metrics.items()):
                samples = asked
                break
    return tree.get("data", {}), samples


def reference_rows(runs: list[Any], device: Any = "cpu", pm: Any = None,
                   echo: Callable[[str], None] | None = None) -> list[ReferenceRow]:
    """The reference rows for MLflow ``runs`` that logged generation metrics: one per (dataset
    settings, sample count), holding each feature space and sampler column those runs have. A
    reference that cannot be computed (a dataset that no longer loads, a space that does not
    apply) is left out, with a line to ``echo``."""
    from mlflow import MlflowClient

    from aepipe.errors import AepipeError

    echo = echo or (lambda line: None)
    client = MlflowClient()
    specs: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:
        parsed = [p for k in run.data.metrics if (p := parse(k))]
        if not parsed:
            continue
        spec = _run_spec(run, client)
        if spec is None:
            continue
        table, n = spec
        entry = specs.setdefault((json.dumps(table, sort_keys=True, default=str), n), {"table": table, "columns": {}})
        for metric, space, sampler in parsed:
            entry["columns"].setdefault(space, set()).add((metric, sampler))
    rows = []
    for (_, n), entry in specs.items():
        row: ReferenceRow | None = None
        for space, columns in entry["columns"].items():
            try:
                found = reference_metrics(entry["table"], space, n, device, pm)
            except (AepipeError, ValueError, RuntimeError) as exc:
                echo(f"no reference row for feature space '{space}' on {entry['table'].get('name', '?')}: {exc}")
                continue
            if row is None:
                row = ReferenceRow(
                    found.get("dataset", entry["table"].get("name", "")), found["n"], found["asked"], found["real"]
                )
            row.spaces.append(space)
            for metric, sampler in columns:
                value = found["metrics"].get(metric)
                if value is not None and math.isfinite(value):
                    row.metrics[key(metric, space, sampler)] = value
        if row is not None:
            rows.append(row)
    return rows
