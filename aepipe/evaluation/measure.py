"""The ``eval_*`` metrics of a model in memory: what training computes at its end for the groups
that ``[evaluate]`` names, and what ``aepipe evaluate`` (:mod:`aepipe.evaluation.run`) computes
for stored runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from aepipe.evaluation import key, select

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.config import EvaluateSettings
    from aepipe.data import DataBundle
    from aepipe.model import AutoEncoder

#: the neighbours of precision/recall/density/coverage: the test split needs more rows than this
NEIGHBOURS = 5


def settings(base: EvaluateSettings | None = None, **changes: Any) -> EvaluateSettings:
    """``base`` (default: the defaults) with the non-None ``changes`` applied and validated."""
    from aepipe.config import EvaluateSettings
    from aepipe.config.validation import validate

    data = (base or EvaluateSettings()).model_dump()
    data.update({k: v for k, v in changes.items() if v is not None})
    return validate(EvaluateSettings, data, "evaluate", {"": "aepipe evaluate"}, "[evaluate]")


def chosen_groups(s: EvaluateSettings, everything: bool) -> dict[str, tuple[str, ...]]:
    """The metrics ``s`` asks for, by group; every group when ``everything`` and none are named."""
    return select(s.metrics if s.metrics else (["all"] if everything else []))


def compute(model: AutoEncoder, data: DataBundle, s: EvaluateSettings, groups: dict[str, tuple[str, ...]],
            samplers: dict[str, Any] | None = None, pm: Any = None,
            step: Callable[[str], None] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics of ``groups`` for ``model`` on ``data`` (test split; the training split for the
    probe), as ``eval_*`` floats, and the groups that do not apply with the reason. ``samplers``:
    extra samplers by name (generation is always measured through the model's own sampler too)."""
    import torch

    from aepipe.evaluation import basic

    step = step or (lambda stage: None)
    out: dict[str, float] = {}
    skipped: dict[str, str] = {}
    was = model.training
    model.eval()
    torch.manual_seed(s.seed)
    try:
        for group, names in groups.items():
            step(group)
            why = _not_applicable(group, model, data)
            if why:
                skipped[group] = why
                continue
            if group == "reconstruction":
                values = basic.reconstruction(model, data.test, data.image_shape)
            elif group == "likelihood":
                values = basic.likelihood(model, data.test, k=s.iw_samples, seed=s.seed)
            elif group == "representation":
                values = basic.representation(model, data.train, data.test, data.n_classes, seed=s.seed)
            elif group == "disentanglement":
                from aepipe.evaluation.disentanglement import disentanglement_metrics

                values = disentanglement_metrics(model, data, next(model.parameters()).device, seed=s.seed)
            elif group == "dictionary":
                from aepipe.evaluation.dictionary import dictionary_metrics

                values = dictionary_metrics(model, data.test, data.value_range)
            else:  # generation
                out.update(_generation(model, data, s, names, samplers or {}, pm, skipped))
                continue
            out.update({key(m): float(v) for m, v in values.items() if m in names})
    finally:
        model.train(was)
    return out, skipped


def _not_applicable(group: str, model: AutoEncoder, data: DataBundle) -> str | None:
    from aepipe.evaluation import basic

    if group == "reconstruction" and not getattr(data.test, "clip", True):
        return "the data is not scaled to [0, 1] (a dataset of unbounded features)"
    if group == "likelihood" and not basic.has_density(model):
        return "the model's code has no density, or its prior no log-density"
    if group == "representation" and (data.test.y is None or data.train.y is None or data.n_classes < 2):
        return "the data has no labels"
    if group == "representation" and len(data.test) < data.n_classes:  # k-means: a cluster per class
        return f"the test split has {len(data.test)} examples, fewer than its {data.n_classes} classes"
    if group == "disentanglement" and not getattr(data, "factor_names", None):
        return "the data has no ground-truth factors"
    if group == "generation" and len(data.test) <= NEIGHBOURS:
        return f"the test split has {len(data.test)} examples; precision/recall need more than {NEIGHBOURS}"
    return None


def _generation(model: AutoEncoder, data: DataBundle, s: EvaluateSettings, names: tuple[str, ...],
                samplers: dict[str, Any], pm: Any, skipped: dict[str, str]) -> dict[str, float]:
    """FID, KID, precision/recall and density/coverage of ``s.samples`` generated images against
    the test split, and the memorization metrics against the training split (at most
    :data:`~aepipe.evaluation.generation.MEMORIZATION_ROWS` rows, a seeded subset), in each
    feature space, through the model's own sampler and each of ``samplers``; with each, its
    bootstrap interval (``s.bootstrap`` resamples; ``eval_<metric>_lo``, ``eval_<metric>_hi``).
    A feature space that cannot take the data (``domain`` without labels, ``inception`` without
    images) is noted in ``skipped`` as ``generation (<space>)``; an unknown one is an error."""
    import torch

    from aepipe.errors import ConfigError
    from aepipe.evaluation.generation import MEMORIZATION_ROWS, feature_space, generation_metrics_with_intervals
    from aepipe.plugins import get_plugin_manager

    pm = pm or get_plugin_manager()
    for features in s.features:  # an unknown name fails before any image is drawn
        pm.registry.get("feature", features)

    device = next(model.parameters()).device
    check_sample_count(s.samples, len(samplers) + 1, data, device)
    real = torch.cat([x for x, _ in data.test.batches(4096)])  # a streamed split (data.in_memory) has no .x
    train = None
    if {"authenticity", "data_copying"} & set(names):
        rows = torch.as_tensor(_rows(len(data.train), MEMORIZATION_ROWS, s.seed), dtype=torch.long)
        train = torch.cat([data.train.take(rows[i: i + 4096])[0] for i in range(0, len(rows), 4096)])
    draws: dict[str | None, torch.Tensor] = {}
    for name, sampler in [(None, None), *samplers.items()]:
        torch.manual_seed(s.seed)
        y = torch.arange(s.samples, device=device) % data.n_classes if model.spec.conditional else None
        with torch.no_grad():
            draws[name] = torch.cat(
                [
                    model.sample(len(part), None if y is None else y[i : i + len(part)], sampler=sampler)
                    for i, part in _chunks(s.samples, 4096)
                ]
            )
    out: dict[str, float] = {}
    for features in s.features:
        try:
            space = feature_space(features, data, device, pm)
        except ConfigError as exc:  # the space does not apply to this data: the other spaces, groups still count
            skipped[f"generation ({features})"] = str(exc)
            continue
        real_f = space.features(real)
        train_f = None if train is None else space.features(train)
        for name, fake in draws.items():
            values = generation_metrics_with_intervals(real_f, space.features(fake.clamp(0, 1)), k=NEIGHBOURS,
                                                       train=train_f, resamples=s.bootstrap, seed=s.seed)
            for m, (v, lo, hi) in values.items():
                if m in names:
                    out[key(m, features, name)] = float(v)
                    if s.bootstrap and lo == lo:  # NaN: no interval (FID in a wide space)
                        out.update({key(m, features, name, "lo"): float(lo), key(m, features, name, "hi"): float(hi)})
    return out


def check_sample_count(samples: int, draws: int, data: DataBundle, device: Any) -> None:
    """Refuse ``samples`` generated images per sampler (``draws`` samplers) that would not fit
    what this process may allocate on ``device`` (:func:`aepipe.limits.memory_budget`), before
    any is drawn: every sampler's images (float32) and a clamped copy of one, beside the test split."""
    from aepipe.limits import check_fits

    values = data.input_dim * 4
    need = (draws + 1) * samples * values + len(data.test) * values
    check_fits(
        need,
        f"--samples {samples}: {samples:,} generated images through each of {draws} sampler{'s' if draws > 1 else ''}",
        device,
        "ask for fewer (--samples, or [evaluate] samples)",
    )


def _rows(n: int, most: int, seed: int):
    """``range(n)``, or a sorted seeded subset of ``most`` of its positions."""
    import numpy as np

    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, most, replace=False))


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield i, range(i, min(n, i + size))
