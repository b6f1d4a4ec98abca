"""``aepipe new-plugin NAME``: a ready plugin distribution that installs, registers, trains and
passes its own tests without edits."""

from __future__ import annotations

import keyword
import re
import textwrap
from pathlib import Path

from aepipe.version import __version__
from aepipe.errors import ConfigError

FILES = {
    "pyproject.toml": '''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "0.1.0"
        description = "An aepipe plugin: the {short} variant."
        requires-python = ">=3.11"
        dependencies = ["aepipe>={aepipe_version}"]

        [project.optional-dependencies]
        test = ["pytest>=8"]

        [project.entry-points.aepipe]
        {short} = "{package}.plugin"

        [tool.setuptools]
        packages = ["{package}"]

        [tool.setuptools.package-data]
        {package} = ["*.toml"]
    ''',
    "README.md": '''
        # {dist}

        An [aepipe](https://pypi.org/project/aepipe/) plugin. It registers the regularizer
        `{short}-code-l2` (lambda * mean ||h||^2 on the code) and the variant `{short}`.

        ```bash
        pip install -e .
        aepipe plugins                                # lists {dist}
        aepipe train {package}/pipeline.toml          # trains the variant on the digits
        python -m pytest                              # aepipe's conformance suite on this plugin
        ```

        Edit `{package}/components.py` for your components and `{package}/plugin.py` to register
        them; the hooks are documented in aepipe's plugin guide (docs/plugins.md).
    ''',
    "{package}/__init__.py": '''
        """{dist}: an aepipe plugin."""
    ''',
    "{package}/plugin.py": '''
        """The hook implementations, loaded through the ``aepipe`` entry point. Keep imports light:
        components are imported inside the registration hooks."""

        from aepipe.plugin import Variant, hookimpl


        @hookimpl
        def aepipe_register_regularizers(register):
            from {package}.components import CodeL2

            register(CodeL2)


        @hookimpl
        def aepipe_register_variants(register):
            register(Variant(
                "{short}",
                "One-layer autoencoder whose code is kept small by an L2 penalty.",
                {{"model": {{
                    "encoder": {{"name": "one-layer", "activation": "tanh"}},
                    "decoder": {{"name": "one-layer"}},
                    "likelihood": "bernoulli",
                    "regularizers": {{"{short}-code-l2": {{"lam": 0.01}}}},
                }}}},
            ))
    ''',
    "{package}/components.py": '''
        """The plugin's components."""

        from __future__ import annotations

        import torch
        from pydantic import Field

        from aepipe.plugin import ComponentConfig, Regularizer


        class CodeL2Config(ComponentConfig):
            """``lam``: weight of the penalty, >= 0."""

            lam: float = Field(0.01, ge=0.0)


        class CodeL2(Regularizer):
            """lambda * mean over the batch of ||h||^2, the code's squared norm."""

            name = "{short}-code-l2"
            Config = CodeL2Config

            def penalty(self, step) -> torch.Tensor:
                return self.config.lam * step.encoding.code.pow(2).sum(-1).mean()

            def evaluate(self, step) -> dict[str, torch.Tensor]:
                return {{"code_norm": step.encoding.code.norm(dim=-1).mean()}}
    ''',
    "{package}/pipeline.toml": '''
        variant = "{short}"
        description = "The {short} variant on scikit-learn's digits."

        [data]
        name = "digits"

        [model]
        code_dim = 16

        [train]
        epochs = 20
        batch_size = 64
        lr = 3e-3

        [tracking]
        experiment = "{short}"

        [tune]
        study = "{short}"           # the study and its registered model: its own, whatever the file is called
        n_trials = 10
        metric = "val_recon"

        [tune.space]
        "model.regularizers.{short}-code-l2.lam" = {{ type = "float", low = 1e-4, high = 1.0, log = true }}
    ''',
    "tests/test_plugin.py": '''
        """The plugin passes aepipe's conformance suite, is found through its entry point and trains."""

        from pathlib import Path

        import pytest

        from aepipe.plugin import check_component, registered_components

        PIPELINE = Path(__file__).resolve().parent.parent / "{package}" / "pipeline.toml"


        @pytest.mark.parametrize("kind,name", registered_components(plugin="{short}"))
        def test_conforms(kind, name):
            check_component(kind, name)


        def test_found_through_its_entry_point(aepipe_pm):
            assert aepipe_pm.infos["{short}"].dist == "{dist}"
            assert "{short}-code-l2" in aepipe_pm.registry.names("regularizer")


        def test_trains(aepipe_pm, aepipe_store):
            from aepipe import resolve, train

            pipeline = resolve(aepipe_pm, PIPELINE, ["train.epochs=3", "tracking.log_model=false"])
            result = train(pipeline, aepipe_pm)
            assert result.status == "FINISHED" and "test_code_norm" in result.metrics
    ''',
}


def names(dist: str) -> dict[str, str]:
    """The distribution, package and short (entry point / variant) names for ``dist``."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", dist):
        raise ConfigError(f"new-plugin {dist!r}: use letters, digits, '-' and '_', starting with a letter")
    package = dist.replace("-", "_").lower()
    short = re.sub(r"^aepipe[-_]", "", dist).replace("_", "-").lower()
    if keyword.iskeyword(package) or not short:
        raise ConfigError(f"new-plugin {dist!r}: not usable as a package name")
    return {"dist": dist, "package": package, "short": short, "aepipe_version": __version__}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_clashes(values: dict[str, str]) -> None:
    """Refuse a name whose distribution, package or entry point is taken in this environment
    (aepipe's own included): the new plugin would shadow it, or never load."""
    import importlib.util
    from importlib import metadata

    from aepipe.plugins import GROUP

    dist, package, short = values["dist"], values["package"], values["short"]
    installed = {_normal(d.metadata["Name"] or ""): d.metadata["Name"] for d in metadata.distributions()}
    if _normal(dist) in installed or _normal(dist) == "aepipe":
        raise ConfigError(
            f"new-plugin {dist!r}: clashes with the installed distribution '{installed.get(_normal(dist), 'aepipe')}'"
        )
    if package in ("aepipe", "aepipe_plugins") or importlib.util.find_spec(package) is not None:
        raise ConfigError(
            f"new-plugin {dist!r}: its package '{package}' would shadow a module that already exists here"
        )
    for ep in metadata.entry_points(group=GROUP):
        if ep.name == short:
            owner = ep.dist.name if getattr(ep, "dist", None) else "another distribution"
            raise ConfigError(f"new-plugin {dist!r}: its plugin name '{short}' is taken by {owner}'s entry point "
                              f"'{ep.name} = {ep.value}'")


def write(dist: str, parent: Path) -> Path:
    values = names(dist)
    check_clashes(values)
    root = parent / dist
    if root.exists():
        raise ConfigError(f"new-plugin: {root} already exists")
    for rel, text in FILES.items():
        path = root / rel.format(**values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n").format(**values))
    return root
