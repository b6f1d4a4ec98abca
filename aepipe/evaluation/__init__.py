"""Judging trained models the way papers do: one vocabulary of ``eval_*`` metrics.

This module imports no torch: it names the metrics and their groups, which the ``[evaluate]``
section of a pipeline and ``aepipe evaluate --metrics`` choose from. The metrics themselves are in
:mod:`aepipe.evaluation.basic` (reconstruction, likelihood, representation),
:mod:`aepipe.evaluation.generation` (FID, KID, precision/recall, density/coverage in a feature
space) and :mod:`aepipe.evaluation.disentanglement` (MIG, DCI, SAP, FactorVAE score); the use case
that computes, logs and caches them for runs is :mod:`aepipe.evaluation.run`.

Logged names: ``eval_<metric>``. Generation metrics are computed in a feature space (a ``feature``
component): ``domain`` (the default) gives ``eval_fid``, any other space adds its name
(``eval_fid_inception``); a sampler named with ``--sampler`` adds ``.<sampler>``
(``eval_fid.gmm``, ``eval_fid_inception.gmm``). A generation metric's 95% bootstrap interval
over samples is logged beside it with ``_lo`` and ``_hi`` after the feature space, before the
sampler (``eval_fid_lo``, ``eval_fid_inception_hi.gmm``): :func:`bound_of` and :func:`bounds`
pair them.
"""

from __future__ import annotations

#: the metric groups and their metrics (names without ``eval_``), in the order they are computed
GROUPS: dict[str, tuple[str, ...]] = {
    "reconstruction": ("mse", "bce", "psnr", "ssim"),
    "likelihood": ("iw_nll", "neg_elbo", "kl", "active_units"),
    "representation": ("probe_accuracy", "kmeans_nmi"),
    "generation": ("fid", "kid", "precision", "recall", "density", "coverage", "authenticity", "data_copying"),
    "disentanglement": ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap",
                        "factorvae_score"),
    "dictionary": ("l0", "fvu", "explained_variance", "cosine", "dead_fraction", "dense_fraction"),
}
#: the groups cheap enough for the end of every training run on small data
CHEAP = ("reconstruction", "representation")
#: metrics where a higher value is better (the rest: lower is better)
HIGHER_IS_BETTER = frozenset({
    "psnr", "ssim", "active_units", "probe_accuracy", "kmeans_nmi", "precision", "recall", "density", "coverage",
    "authenticity", "data_copying",
    "mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "factorvae_score",
    "explained_variance", "cosine",
})
#: metrics with no better direction (a KL to the prior: near 0 is a collapsed posterior): never marked best
NO_DIRECTION = frozenset({"kl"})
#: the feature space whose metrics carry no suffix
DEFAULT_FEATURES = "domain"
PREFIX = "eval_"


def metric_of(key: str) -> str:
    """The vocabulary's name of a logged key: ``eval_fid_inception.gmm`` -> ``fid``."""
    name = key[len(PREFIX):] if key.startswith(PREFIX) else key
    name = name.split(".", 1)[0]
    for metric in GROUPS["generation"]:
        if name.startswith(metric + "_") or name == metric:
            return metric
    return name


def higher_is_better(key: str) -> bool:
    """Whether a larger value of logged metric ``key`` (``eval_*`` or ``test_*``) is better
    (``data_copying``: negative means copying, positive samples off the data; higher is
    counted better, as copying is what it is there to show)."""
    return metric_of(key) in HIGHER_IS_BETTER


def has_direction(key: str) -> bool:
    """Whether logged metric ``key`` has a better direction (tables mark its best value)."""
    return metric_of(key) not in NO_DIRECTION


#: the suffixes of a bootstrap interval's bounds
BOUNDS = ("lo", "hi")


def key(metric: str, features: str | None = None, sampler: str | None = None, bound: str | None = None) -> str:
    """The logged name of ``metric`` (in feature space ``features``, through ``sampler``; ``bound``
    ``lo`` or ``hi``: its bootstrap interval's lower or upper bound)."""
    name = PREFIX + metric
    if features and features != DEFAULT_FEATURES:
        name += f"_{features}"
    if bound:
        if bound not in BOUNDS:
            raise ValueError(f"bound {bound!r}; choose lo or hi")
        name += f"_{bound}"
    if sampler:
        name += f".{sampler}"
    return name


def bound_of(key: str) -> tuple[str, str | None]:
    """A logged generation key without its interval bound, and the bound (``lo``, ``hi`` or None):
    ``eval_fid_inception_lo.gmm`` -> (``eval_fid_inception.gmm``, ``lo``)."""
    base, dot, sampler = key.partition(".")
    for bound in BOUNDS:
        if (
            base.endswith("_" + bound)
            and metric_of(base) in GROUPS["generation"]
            and metric_of(base) != base[len(PREFIX) :]
        ):
            return base[: -len(bound) - 1] + dot + sampler, bound
    return key, None


def bounds(key: str) -> tuple[str, str]:
    """The logged names of the lower and upper bound of logged generation metric ``key``'s interval."""
    base, dot, sampler = key.partition(".")
    return base + "_lo" + dot + sampler, base + "_hi" + dot + sampler


def order(keys: list[str] | set[str]) -> list[str]:
    """Logged ``eval_*`` keys in the vocabulary's order (group, metric), then feature space and
    sampler; keys outside the vocabulary last, by name."""
    rank = {m: i for i, m in enumerate(m for ms in GROUPS.values() for m in ms)}

    def sort_key(k: str) -> tuple:
        base, bound = bound_of(k)
        return (rank.get(metric_of(k), len(rank)), "." in k, base, (None, *BOUNDS).index(bound))

    return sorted(keys, key=sort_key)


def select(names: list[str] | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The metrics chosen by ``names`` (groups or metrics, with or without ``eval_``), by group;
    an unknown name is a ValueError listing the known ones."""
    chosen: dict[str, list[str]] = {}
    known = {m: g for g, ms in GROUPS.items() for m in ms}
    for raw in names:
        name = raw.strip()
        name = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if name in ("all", ""):
            for g, ms in GROUPS.items():
                chosen.setdefault(g, []).extend(m for m in ms if m not in chosen.get(g, []))
        elif name in GROUPS:
            chosen.setdefault(name, []).extend(m for m in GROUPS[name] if m not in chosen.get(name, []))
        elif name in known:
            if name not in chosen.setdefault(known[name], []):
                chosen[known[name]].append(name)
        else:
            raise ValueError(f"unknown metric {raw!r}; choose groups ({', '.join(GROUPS)}), metrics "
                             f"({', '.join(known)}) or all")
    return {g: tuple(m for m in GROUPS[g] if m in chosen[g]) for g in GROUPS if g in chosen}
