"""The conformance suite: :func:`check_component` and :func:`check_variant` build a small model
around a registered component (or a whole variant) and check what the contract promises (settings
that validate and round-trip, shapes, a loss that goes down, determinism, state that reloads),
under its default settings and each configuration it declares (``conformance_settings``). It runs
without pytest (``aepipe plugins --check``); :mod:`aepipe.testing` re-exports it with the pytest
fixtures."""

from __future__ import annotations

import copy
from typing import Any


class CheckSkipped(Exception):
    """A conformance check that cannot run here (the component needs data files, settings or a
    package that are not here): not a failure. ``aepipe plugins --check`` lists it as skipped;
    under pytest, the hook below makes it a skipped test."""

    def __init__(self, reason: str):
        super().__init__(reason)


# --- the conformance suite ----------------------------------------------------------------

#: Datasets for the model components' checks: small, embedded, labelled.
_CHECK_DATA = {"name": "digits"}

#: Training steps on one batch within which a model component's loss must go down.
_LOSS_STEPS = 30


def registered_components(
    pm=None, plugin: str | None = None, kinds: tuple[str, ...] | None = None
) -> list[tuple[str, str]]:
    """``(kind, name)`` of every registered component and variant (optionally of one plugin),
    for ``pytest.mark.parametrize`` over :func:`check_component`."""
    from aepipe.kinds import NAMES
    from aepipe.plugins import get_plugin_manager

    pm = pm or get_plugin_manager()
    reg = pm.registry
    out = []
    for kind in kinds or NAMES:
        for name in reg.names(kind):
            if plugin is None or reg.source(kind, name).name == plugin:
                out.append((kind, name))
    return out


def _with_settings(tree: dict[str, Any], kind: str, name: str, settings: dict[str, Any] | None) -> dict[str, Any]:
    """``tree`` with the component's ``settings`` merged into its own table (its section, or its
    key under ``[model.regularizers]``)."""
    from aepipe.kinds import BY_NAME

    if settings:
        section = BY_NAME[kind].model_section
        model = tree.setdefault("model", {})
        table = model.setdefault("regularizers", {}).setdefault(name, {}) if kind == "regularizer" else \
            model.setdefault(section, {"name": name})
        table.update(copy.deepcopy(settings))
    return tree


def _variant_for(pm, kind: str, name: str) -> dict[str, Any]:
    """A pipeline tree using the component: its own ``conformance`` pipeline (which may name a
    variant and override its settings, e.g. to check a big network at small widths), else a
    registered variant that names it, else the simplest composition around it."""
    from aepipe.kinds import BY_NAME

    reg = pm.registry
    section = BY_NAME[kind].model_section
    declared = getattr(reg.get(kind, name), "conformance", None) if kind != "variant" else None
    if declared:  # the component's own choice of a pipeline around it
        tree = copy.deepcopy(declared)
        tree.setdefault("model", {})
        if section:
            tree["model"].setdefault(section, {"name": name})
        return tree
    for vname, variant in reg.items("variant"):
        model = variant.defaults.get("model", {})
        if section and model.get(section, {}).get("name") == name:
            return {"variant": vname}
        if kind == "regularizer" and name in model.get("regularizers", {}):
            return {"variant": vname}
    tree: dict[str, Any] = {
        "model": {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]}}
    }
    if section:
        tree["model"][section] = {"name": name}
    if kind == "regularizer":
        tree["model"]["regularizers"] = {name: {}}
    if kind == "bottleneck" and "kl" in reg.names("regularizer") and "standard-normal" in reg.names("prior"):
        probe = reg.get(kind, name)
        if "sample" in probe.what and not probe.discrete:  # a posterior: the VAE's composition around it
            tree["model"]["prior"] = {"name": "standard-normal"}
            tree["model"]["regularizers"] = {"kl": {}}
    if kind == "prior":
        regularizers = reg.names("regularizer")
        if reg.get("prior", name).has_log_prob and "kl" in regularizers:
            tree["model"]["encoder"]["distribution"] = "gaussian"
            tree["model"]["regularizers"] = {"kl": {}}
        elif "adversarial" in regularizers:  # a prior that can only be sampled
            tree["model"]["regularizers"] = {"adversarial": {}}
    return tree


def _build_component_model(
    pm, kind: str, name: str, seed: int = 0, extra: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
):
    import torch

    from aepipe.config import resolve
    from aepipe.model import build_model
    from aepipe.training import load_data

    tree = _with_settings(_variant_for(pm, kind, name), kind, name, settings)
    if data is not None:
        tree["data"] = dict(data)
    tree.setdefault("data", dict(_CHECK_DATA))
    # a variant keeps its own code size (e.g. a 2-D ring prior), a declared pipeline its own
    if not tree.get("variant"):
        tree["model"].setdefault("code_dim", 8)
    pipeline = resolve(pm, tree=tree, values=extra)
    torch.manual_seed(seed)
    data = load_data(pipeline, torch.device("cpu"))
    torch.manual_seed(seed)
    return pipeline, build_model(pipeline, data), data


def _component(model, kind: str, name: str):
    if kind == "regularizer":
        return next(r for r in model.regularizers.values() if r.name == name)
    return getattr(model, kind)


def check_variant(name: str, pm=None, data: dict[str, Any] | None = None) -> None:
    """A registered variant's defaults resolve into a pipeline, its model builds, and one batch
    of training (the optimizer the pipeline names, and any regularizer's own update) gives a
    finite loss and changes the model's parameters. Its own dataset is used where its defaults
    name one (skipped if that needs files that are not here), else scikit-learn's digits;
    ``data`` (a ``[data]`` table) overrides both."""
    import torch

    from aepipe.config import resolve
    from aepipe.errors import ConfigError, DataError
    from aepipe.model import build_model
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import load_data, make_optimizer
    from aepipe.training.step import optimizer_step

    pm = pm or get_plugin_manager()
    variant = pm.registry.get("variant", name)
    who = f"variant '{name}' ({pm.registry.source('variant', name).describe()})"
    tree: dict[str, Any] = {"variant": name}
    if data is not None:
        tree["data"] = dict(data)
    elif not variant.defaults.get("data", {}).get("name"):
        tree["data"] = dict(_CHECK_DATA)
    try:
        pipeline = resolve(pm, tree=tree)
    except ConfigError as exc:
        raise AssertionError(f"{who}: its defaults do not make a valid pipeline: {exc}") from None
    try:
        data = load_data(pipeline, torch.device("cpu"))
    except DataError as exc:
        raise CheckSkipped(f"{who} needs data: {exc}") from None
    torch.manual_seed(0)
    model = build_model(pipeline, data)
    t = pipeline.settings.train
    params = model.model_parameters()
    optimizer = make_optimizer(params, t.optimizer, t.lr, t.weight_decay)
    x, y = data.train.head(min(t.batch_size, 64))
    before = [p.detach().clone() for p in params]
    loss, _, step = model.step(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss), f"{who}: the loss of one batch is {loss}"
    optimizer_step(model, optimizer, loss, step)  # as a run's epoch takes it
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, params)), (
        f"{who}: one batch of training changed no parameter"
    )


def _check_feature_space(cls, config, who: str, table: dict[str, Any] | None) -> None:
    """A feature space prepared on the check data (a learning one in a temporary cache) gives
    ``(n, dim)`` finite features, the same for a row whatever else is in its batch; a learning
    one rebuilt from its cache gives the same features. A space that needs a package that is
    not installed (its error names ``pip install``) is skipped."""
    import tempfile

    import torch

    from aepipe.components import ModelSpec
    from aepipe.errors import ConfigError
    from aepipe.evaluation.image_sets import load_dataset

    data = load_dataset(dict(table or _CHECK_DATA), torch.device("cpu"))
    spec = ModelSpec(input_dim=data.input_dim, code_dim=0, image_shape=data.image_shape, n_classes=data.n_classes)
    x = data.test.head(4)[0]
    with tempfile.TemporaryDirectory() as cache:
        space = cls(config, spec)
        try:
            space.prepare(data, torch.device("cpu"), cache)
        except ConfigError as exc:
            if "pip install" in str(exc):
                raise CheckSkipped(f"{who}: {exc}") from None
            raise
        f = space.features(x)
        assert tuple(f.shape) == (len(x), space.dim), (
            f"{who}: features of shape {tuple(f.shape)}, expected {(len(x), space.dim)}"
        )
        assert torch.isfinite(f).all(), f"{who}: features hold NaN or infinite values"
        g = space.features(x[:2])
        assert torch.allclose(g, f[:2], rtol=1e-4, atol=1e-5), (
            f"{who}: a row's features change with the rest of its batch (or between calls)"
        )
        if cls.needs_data:
            again = cls(config, spec)
            again.prepare(data, torch.device("cpu"), cache)
            assert torch.allclose(again.features(x), f, rtol=1e-4, atol=1e-5), \
                f"{who}: rebuilt from its cache, it gives other features"


def check_component(kind: str, name: str, pm=None, data: dict[str, Any] | None = None,
                    settings: dict[str, Any] | None = None) -> None:
    """Run every conformance check on one registered component (for a variant,
    :func:`check_variant`) under its defaults, then under each of the settings it declares
    (``conformance_settings``), or only under ``settings`` where given; raises AssertionError
    (or the component's own error) naming the check that failed and the settings it ran under.
    Model components are checked on scikit-learn's digits, or on ``data`` (a ``[data]`` table,
    e.g. ``{"name": "file", "path": "images.npz", "image_shape": [3, 32, 32]}``)."""
    from aepipe.plugins import get_plugin_manager

    pm = pm or get_plugin_manager()
    if kind == "variant":
        check_variant(name, pm, data)
        return
    declared = getattr(pm.registry.get(kind, name), "conformance_settings", ())
    for each in [settings] if settings is not None else [{}, *declared]:
        _check_under(pm, kind, name, data, dict(each))


def _check_under(pm, kind: str, name: str, data: dict[str, Any] | None, settings: dict[str, Any]) -> None:
    """Every conformance check on one component built with ``settings`` (its own, over its defaults)."""
    import torch
    from pydantic import ValidationError

    from aepipe.training.step import optimizer_step, owned_regularizers

    cls = pm.registry.get(kind, name)
    who = f"{kind} '{name}' ({pm.registry.source(kind, name).describe()})" + (f" under settings {settings}"
                                                                               if settings else "")

    # config round trip, and bad settings are clear errors
    try:
        config = cls.Config.model_validate(settings)
    except ValidationError as exc:
        missing = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "missing"]
        if kind == "dataset" and missing:
            raise CheckSkipped(f"{who} needs settings to load: {', '.join(missing)}") from None
        if settings:
            raise AssertionError(
                f"{who}: its Config refuses the settings it declares ({exc.errors()[0]['msg']})"
            ) from None
        raise AssertionError(
            f"{who}: Config() must work with defaults alone ({exc.errors()[0]['msg']}: {missing})"
        ) from None
    assert cls.Config.model_validate(config.model_dump()) == config, f"{who}: Config does not round-trip"
    try:
        cls.Config.model_validate({"__not_a_setting__": 1})
    except ValidationError:
        pass
    else:
        raise AssertionError(f"{who}: Config accepts an unknown setting ('__not_a_setting__')")

    if kind == "dataset":
        from aepipe.errors import DataError

        try:
            raw = cls(config).load()
        except DataError as exc:
            raise CheckSkipped(f"{who} needs data: {exc}") from None
        assert len(raw.x) == (len(raw.y) if raw.y is not None else len(raw.x)), (
            f"{who}: inputs and labels differ in length"
        )
        assert raw.value_range[1] > raw.value_range[0], f"{who}: empty value_range"
        return
    if kind == "feature":
        _check_feature_space(cls, config, who, data)
        return

    # shape contracts
    table = data
    pipeline, model, data = _build_component_model(pm, kind, name, data=table, settings=settings)
    part = _component(model, kind, name)
    declared = getattr(part, {"bottleneck": "support", "prior": "draws", "sampler": "draws"}.get(kind, ""), None)
    if declared is not None:
        from aepipe.sampling import SUPPORTS

        assert declared in SUPPORTS, (f"{who}: declares '{declared}', which is none of aepipe.sampling.SUPPORTS "
                                      f"({', '.join(SUPPORTS)})")
    x, y = data.train.head(16)
    y1 = model.one_hot(y)
    n, d, k = x.shape[0], model.spec.input_dim, model.spec.code_dim
    with torch.no_grad():
        if kind == "encoder":
            enc, width = part(x, y1), part.spec.code_dim  # as wide as the bottleneck's features
            assert enc.code.shape == (n, width), f"{who}: code shape {tuple(enc.code.shape)}, expected {(n, width)}"
        elif kind == "decoder":
            out = part(torch.randn(n, k), y1)
            assert out.shape == (n, d), f"{who}: output shape {tuple(out.shape)}, expected {(n, d)}"
        elif kind == "corruption":
            torch.manual_seed(0)
            out = part(x)
            assert out.shape == x.shape and torch.isfinite(out).all(), (
                f"{who}: corruption changed the shape or gave NaN"
            )
        elif kind == "bottleneck":
            enc = model.encoder(x, y1)
            for samples in (1, 3):
                code = part(enc, y1, samples)
                assert code.code.shape == (n, k), f"{who}: code shape {tuple(code.code.shape)}, expected {(n, k)}"
                assert code.z.shape == (code.samples * n, k), (
                    f"{who}: z shape {tuple(code.z.shape)}, expected {(code.samples * n, k)}"
                )
                assert code.samples in (1, samples), f"{who}: {code.samples} draws for samples = {samples}"
                for what in part.what:
                    assert what in code.outputs and code.outputs[what].shape[0] == n, (
                        f"{who}: output '{what}' missing or not (n, ...)"
                    )
                if code.log_q is not None:
                    assert code.log_q.shape == (code.samples, n), (
                        f"{who}: log_q shape {tuple(code.log_q.shape)}, expected {(code.samples, n)}"
                    )
                for key, value in code.losses.items():
                    assert value.dim() == 0, f"{who}: loss '{key}' is not a scalar"
            if part.discrete:
                indices = code.outputs["indices"]
                positions, choices = part.index_shape()
                assert indices.shape == (n, positions) and int(indices.min()) >= 0 and int(indices.max()) < choices, \
                    f"{who}: indices must be (n, {positions}) integers in [0, {choices})"
                assert part.from_indices(indices).shape == (n, k), f"{who}: from_indices must give (n, code_dim)"
        elif kind == "sampler":
            from aepipe.training.metrics import fit_on_codes

            torch.manual_seed(0)
            with torch.enable_grad():
                fit_on_codes(model, part, data.train)
            assert bool(part.fitted), f"{who}: not marked fitted after fit"
            torch.manual_seed(3)
            z = part.sample(n)
            assert z.shape == (n, k) and torch.isfinite(z).all(), (
                f"{who}: sample shape {tuple(z.shape)}, expected {(n, k)}, finite"
            )
            rebuilt = type(part)(part.config, part.spec)
            rebuilt.setup(model)
            rebuilt.load_state_dict(part.state_dict())  # its fitted state is data: buffers and parameters
            torch.manual_seed(3)
            assert torch.allclose(rebuilt.sample(n), z), (
                f"{who}: a sampler rebuilt from its state_dict draws other samples"
            )
        elif kind == "prior":
            z = part.sample(n)
            assert z.shape == (n, k), f"{who}: sample shape {tuple(z.shape)}, expected {(n, k)}"
            if part.has_log_prob:
                lp = part.log_prob(z)
                assert lp.shape == (n,) and torch.isfinite(lp).all(), f"{who}: log_prob must give (n,) finite values"
    # the whole step works and its loss is a finite scalar
    loss, terms, _ = model.step(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss), f"{who}: loss {loss}"

    # determinism under a seed
    _, again, _ = _build_component_model(pm, kind, name, data=table, settings=settings)
    torch.manual_seed(1)
    a = model.step(x, y)[0].detach()
    torch.manual_seed(1)
    b = again.step(x, y)[0].detach()
    assert torch.allclose(a, b), f"{who}: not deterministic under a seed ({float(a)} vs {float(b)})"

    # device and dtype moves
    moved = again.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in moved.parameters()), (
        f"{who}: parameters stayed in float32 after .to(float64)"
    )
    out64 = moved.step(x.double(), y)[0]
    assert out64.dtype == torch.float64 and torch.isfinite(out64), f"{who}: float64 step failed"
    if torch.cuda.is_available():
        gpu = again.float().to("cuda")
        assert torch.isfinite(gpu.step(x.cuda(), None if y is None else y.cuda())[0]), f"{who}: CUDA step failed"

    # a few steps on one batch lower the loss: within 30 steps, measured every 5 (the same
    # seeded evaluation each time, drawn aside from the training's random stream); most
    # components get there in the first 5, so the rest is not run
    torch.manual_seed(0)
    _, model, _ = _build_component_model(pm, kind, name, data=table, settings=settings)
    opt = torch.optim.Adam(model.parameter_groups(), lr=1e-3)  # the component's own groups keep their options
    owned, after = owned_regularizers(model), model.after_step_parts()
    batch = data.train.head(64)

    def batch_loss() -> float:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return float(model.step(*batch, training=False)[0].detach())

    first = last = batch_loss()
    torch.manual_seed(0)
    for done in range(1, _LOSS_STEPS + 1):
        loss, _, step = model.step(*batch)
        optimizer_step(model, opt, loss, step, after=after, owned=owned)
        if done % 5 == 0 or done == _LOSS_STEPS:
            last = batch_loss()
            if last < first:
                break
    assert last < first, (
        f"{who}: {_LOSS_STEPS} training steps on one batch did not lower the loss ({first:.4g} -> {last:.4g})"
    )
