"""The layers of aepipe, checked: every module has its place in :data:`LAYERS`, imports nothing
from a higher layer (at module level or inside a function; type-only imports upward only where
:data:`TYPE_ONLY_UP` says), no module takes part in an import cycle, the light layers import no
torch, MLflow or Optuna at module level, a package's ``__init__`` pulls in nothing above the lowest
of its modules, and the CLI only parses, calls a use case, prints and maps errors.

The imports are read from the source (``ast``), so a function-local import counts as much as a
module-level one: what the table forbids cannot hide inside a function."""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aepipe"
#: where plugins live: first-party ones and the example of a third-party distribution
PLUGIN_TREES = [PACKAGE.parent / "plugins", PACKAGE.parent / "examples"]

#: bottom to top: (layer, what it holds, light: no torch/MLflow/Optuna at module level, modules)
LAYERS: list[tuple[str, str, bool, list[str]]] = [
    ("base", "types, errors and helpers every layer may use", True, [
        "aepipe.version", "aepipe.lazy", "aepipe.errors", "aepipe.strict", "aepipe.kinds", "aepipe.variant",
        "aepipe.files",
        "aepipe.secrets", "aepipe.arrays", "aepipe.figures", "aepipe.limits", "aepipe.seeds",
    ]),
    ("contract: components",
     "the component base classes (torch modules), the data types they exchange and the protocols "
     "naming what they receive of the layers above", False, [
        "aepipe.components", "aepipe.feature_space", "aepipe.datatypes", "aepipe.protocols",
    ]),
    ("contract: hooks", "the hooks a plugin implements and the run context they receive", True, [
        "aepipe.hookspecs", "aepipe.context",
    ]),
    ("registry", "plugins found through entry points, components by kind and name", True, [
        "aepipe.plugins", "aepipe.defaults", "aepipe.registry", "aepipe.plugin_isolation", "aepipe.metric_names",
    ]),
    ("configuration", "the pipeline file as typed settings; the metric vocabulary", True, [
        "aepipe.config", "aepipe.config.schema", "aepipe.config.tree", "aepipe.config.pipeline",
        "aepipe.config.prescan",
        "aepipe.config.reading", "aepipe.config.validation", "aepipe.config.resolve", "aepipe.config.stored",
        "aepipe.evaluation",
    ]),
    ("assembly", "models, data, devices, optimizers, samplers and the measurements of a model in memory", False, [
        "aepipe.likelihoods", "aepipe.networks", "aepipe.model", "aepipe.data", "aepipe.stats", "aepipe.sampling",
        "aepipe.factors",
        "aepipe.training.device", "aepipe.training.setup", "aepipe.training.metrics", "aepipe.training.state",
        "aepipe.training.distributed", "aepipe.training.schedules", "aepipe.training.resume", "aepipe.training.step",
        "aepipe.training.assemble",
        "aepipe.evaluation.basic", "aepipe.evaluation.disentanglement", "aepipe.evaluation.generation",
        "aepipe.evaluation.dictionary",
        "aepipe.evaluation.neighbours", "aepipe.evaluation.memorization", "aepipe.evaluation.image_sets",
        "aepipe.evaluation.ladder", "aepipe.evaluation.measure",
    ]),
    ("storage", "model files, the pyfunc flavour, the run store and its trackers, runs read back", False, [
        "aepipe.artifacts", "aepipe.serving", "aepipe.tracking", "aepipe.tracking.base", "aepipe.tracking.store",
        "aepipe.tracking.template", "aepipe.tracking.health", "aepipe.tracking.lookup", "aepipe.tracking.error_line",
        "aepipe.tracking.git",
        "aepipe.tracking.sweep", "aepipe.tracking.memory", "aepipe.tracking.mlflow_tracker",
        "aepipe.tracking.mlflow_run", "aepipe.runs",
    ]),
    ("lifecycle", "a training run from start to end; a study's workers and records", False, [
        "aepipe.training", "aepipe.training.epoch", "aepipe.training.graphs", "aepipe.training.loop",
        "aepipe.training.run_log",
        "aepipe.training.launch", "aepipe.tune", "aepipe.tune.study", "aepipe.tune.optuna_adapter",
        "aepipe.tune.record",
        "aepipe.tune.worker", "aepipe.tune.supervise",
    ]),
    ("use cases", "what a user asks for, as plain functions: the API the CLI and notebooks call", False, [
        "aepipe.usecases", "aepipe.usecases.train", "aepipe.usecases.tune", "aepipe.usecases.arrays",
        "aepipe.usecases.plugins", "aepipe.usecases.fid", "aepipe.evaluation.run", "aepipe.evaluation.report",
        "aepipe.evaluation.report.table", "aepipe.evaluation.report.pareto", "aepipe.evaluation.report.figures",
        "aepipe.evaluation.report.page", "aepipe.evaluation.report.publish",
        "aepipe.evaluation.reference", "aepipe.zoo", "aepipe.compare",
        "aepipe.ui", "aepipe.template", "aepipe.testing", "aepipe.conformance", "aepipe.plugin", "aepipe.guide",
    ]),
    ("cli", "parses options, calls one use case, prints, maps errors to exit codes", True, [
        "aepipe.console", "aepipe.cli", "aepipe.cli.group", "aepipe.cli.runs", "aepipe.cli.arrays",
        "aepipe.cli.judging",
        "aepipe.cli.comparing", "aepipe.cli.plugins", "aepipe.cli.ui", "aepipe.cli.exit", "aepipe.cli.main",
        "aepipe.cli.__main__",
    ]),
    ("api", "the package root: the plugin marker and version; every other name is a lazy facade", True, [
        "aepipe",
    ]),
]

#: type-only imports (under ``if TYPE_CHECKING``) allowed to point upward: none. The contract names
#: what it receives of the layers above through the protocols of :mod:`aepipe.protocols`.
TYPE_ONLY_UP: set[tuple[str, str]] = set()

HEAVY = ("torch", "mlflow", "optuna")
#: the CLI's imports: use cases, and what it needs to print and map errors
CLI_MAY_IMPORT = {"aepipe.errors", "aepipe.secrets", "aepipe.version", "aepipe.tracking.store",
                  "aepipe.tracking.health",
                  "aepipe.tracking.error_line", "aepipe.plugins", "aepipe.plugin_isolation", "aepipe.console"}
CLI_MAX_LINES = 200  # each module of the cli package

LAYER_OF = {module: i for i, (_, _, _, modules) in enumerate(LAYERS) for module in modules}
NAME = [name for name, _, _, _ in LAYERS]


@dataclass(frozen=True)
class Import:
    src: str
    dst: str
    kind: str  # "top" (module level), "local" (inside a function) or "type" (under TYPE_CHECKING)
    line: int


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _scopes(tree: ast.AST) -> tuple[set[int], set[int]]:
    typed, local = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typed.update(id(n) for n in ast.walk(node))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local.update(id(n) for n in ast.walk(node))
    return typed, local


def imports(external: bool = False) -> list[Import]:
    """Every import statement of the package, resolved to the module it loads (``from a import b``
    names ``a.b`` where that is a module, else ``a``); with ``external``, also other packages (by
    top-level name)."""
    mods = modules()
    found = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        typed, local = _scopes(tree)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            kind = "type" if id(node) in typed else "local" if id(node) in local else "top"
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in mods else source for a in node.names]
            for target in targets:
                if target.split(".")[0] != "aepipe":
                    if external:
                        found.append(Import(name, target.split(".")[0], kind, node.lineno))
                    continue
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    found.append(Import(name, target, kind, node.lineno))
    return found


def test_every_module_has_a_layer():
    mods = set(modules())
    assert sorted(mods - set(LAYER_OF)) == [], "modules missing from LAYERS: give each its layer"
    assert sorted(set(LAYER_OF) - mods) == [], "LAYERS names modules that do not exist"


def test_no_module_imports_a_higher_layer():
    wrong = []
    for imp in imports():
        src, dst = LAYER_OF[imp.src], LAYER_OF[imp.dst]
        if dst <= src or (imp.kind == "type" and (imp.src, imp.dst) in TYPE_ONLY_UP):
            continue
        wrong.append(f"{imp.src}:{imp.line} ({NAME[src]}) imports {imp.dst} ({NAME[dst]}, {imp.kind})")
    assert wrong == []


def test_no_import_cycles():
    """Cycles among modules, through function-local and type-only imports too."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in imports():
        graph[imp.src].add(imp.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(modules()):
        if module not in index:
            visit(module)
    assert cycles == []


def test_light_layers_import_no_heavy_library_at_module_level():
    light = {m for _, _, is_light, mods in LAYERS if is_light for m in mods}
    heavy = [f"{i.src}:{i.line} imports {i.dst}" for i in imports(external=True)
             if i.src in light and i.kind == "top" and i.dst in HEAVY]
    assert heavy == []
    # what a light module imports at module level from aepipe is light too
    pulled = [f"{i.src}:{i.line} imports {i.dst} at module level" for i in imports()
              if i.src in light and i.kind == "top" and i.dst not in light]
    assert pulled == []


def test_a_package_init_pulls_in_nothing_above_its_lowest_module():
    """Importing ``aepipe.training.device`` runs ``aepipe/training/__init__.py`` first: a package's
    module-level imports stay at or below the lowest layer among its modules (facades are lazy)."""
    mods = modules()
    wrong = []
    for package, path in mods.items():
        if path.name != "__init__.py" or package == "aepipe":
            continue
        lowest = min(LAYER_OF[m] for m in mods if m.startswith(package + "."))
        wrong += [
            f"{package}:{i.line} imports {i.dst} ({NAME[LAYER_OF[i.dst]]}) at module level; its lowest module is "
            f"{NAME[lowest]}"
            for i in imports()
            if i.src == package and i.kind == "top" and LAYER_OF[i.dst] > lowest
        ]
    assert wrong == []


def test_the_root_imports_only_the_marker_and_version_and_lazy_names_exist():
    import importlib

    import aepipe

    top = {i.dst for i in imports() if i.src == "aepipe" and i.kind != "type"}
    assert top <= {"aepipe.hookspecs", "aepipe.version", "aepipe.lazy"}
    inside = [i for i in imports() if i.dst == "aepipe" and i.src != "aepipe"]
    assert inside == [], "modules import the root facade; import from the defining module instead"
    for name, (module, attr) in aepipe._LAZY.items():
        assert getattr(importlib.import_module(module), attr) is getattr(aepipe, name)
        assert LAYER_OF[module] in (NAME.index("base"), NAME.index("use cases"), NAME.index("registry"),
                                    NAME.index("configuration"), NAME.index("storage"), NAME.index("lifecycle")), name


def _cli_modules() -> list[str]:
    return [m for m in modules() if m == "aepipe.cli" or m.startswith("aepipe.cli.")]


def test_the_cli_is_thin():
    """Each module of the ``aepipe.cli`` package: short, and reaching only the use cases and what it
    needs to print and map errors."""
    cli = _cli_modules()
    assert len(cli) > 1, "the CLI is the package aepipe.cli"
    for module in cli:
        lines = len(modules()[module].read_text().splitlines())
        assert lines <= CLI_MAX_LINES, f"{module} has {lines} lines"
    allowed = CLI_MAY_IMPORT | set(cli) | {m for m in LAYER_OF if LAYER_OF[m] == NAME.index("use cases")}
    reached = sorted(
        {f"{i.src} imports {i.dst} (line {i.line})" for i in imports() if i.src in cli and i.dst not in allowed}
    )
    assert reached == [], "the CLI calls use cases only"
    external = {i.dst for i in imports(external=True) if i.src in cli and not i.dst.startswith("aepipe")}
    assert not external & {"torch", "numpy", "mlflow", "optuna"}, "array and model work belongs to the use cases"


def test_unscaling_is_written_once():
    """``lo + x * (hi - lo)``: data.unscale, nowhere else."""
    pattern = re.compile(r"lo \+ .* \* \(hi - lo\)")
    places = [f"{p.relative_to(PACKAGE.parent)}:{n}" for p in PACKAGE.rglob("*.py")
              for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert len(places) == 1 and places[0].startswith("aepipe/data.py:"), places


def test_light_modules_really_stay_light():
    """What the static reading promises, at run time: importing the light layers loads no torch,
    MLflow or Optuna (one fresh interpreter for all of them)."""
    import subprocess
    import sys

    light = sorted(m for _, _, is_light, mods in LAYERS if is_light for m in mods)
    code = f"import sys, {', '.join(light)}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_package_facades_name_what_exists():
    """A package whose names load on first use (``aepipe.training.train``...) names only what exists."""
    import importlib

    for package, path in modules().items():
        if path.name != "__init__.py":
            continue
        module = importlib.import_module(package)
        for name in getattr(module, "_NAMES", {}):
            assert getattr(module, name) is not None, f"{package}.{name}"


def test_the_documented_table_is_this_table():
    """docs/architecture.md shows each layer with exactly the modules :data:`LAYERS` gives it."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] and not cells[0].startswith(("layer", "---")):
            rows[cells[0].replace(" (light)", "")] = (
                cells[0].endswith("(light)"),
                set(re.findall(r"`([\w.]+)`", cells[2])),
            )
    assert list(rows) == NAME
    for name, _, light, mods in LAYERS:
        shown = {m if m == "aepipe" else m.removeprefix("aepipe.") for m in mods}
        assert rows[name] == (light, shown), name


#: below the lifecycle, the heavy libraries imported at module level, and why: the component base
#: classes and what assembles them are torch modules; the pyfunc flavour is an MLflow class
HEAVY_BELOW_LIFECYCLE = {"contract: components": {"torch"}, "assembly": {"torch"}}
HEAVY_MODULES_BELOW_LIFECYCLE = {"aepipe.serving": {"mlflow"}}


def test_below_the_lifecycle_heavy_libraries_only_where_their_classes_are_subclassed():
    below = {m for i, (_, _, _, mods) in enumerate(LAYERS) if i < NAME.index("lifecycle") for m in mods}
    wrong = []
    for i in imports(external=True):
        if i.src in below and i.kind == "top" and i.dst in HEAVY:
            allowed = HEAVY_BELOW_LIFECYCLE.get(NAME[LAYER_OF[i.src]], set()) | HEAVY_MODULES_BELOW_LIFECYCLE.get(
                i.src, set()
            )
            if i.dst not in allowed:
                wrong.append(f"{i.src}:{i.line} imports {i.dst} at module level")
    assert wrong == []


def plugin_imports(trees: list[Path] | None = None) -> list[tuple[str, int, str, list[str]]]:
    """Every import of aepipe by a plugin under ``trees`` (default :data:`PLUGIN_TREES`): (file, line,
    module, names)."""
    found = []
    for tree_root in trees or PLUGIN_TREES:
        for path in sorted(tree_root.rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found += [(str(path.relative_to(tree_root.parent)), node.lineno, a.name, []) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    found.append((str(path.relative_to(tree_root.parent)), node.lineno, node.module or "",
                                  [a.name for a in node.names]))
    return [(f, n, m, names) for f, n, m, names in found if m.split(".")[0] == "aepipe"]


def test_plugins_and_examples_import_only_the_plugin_api(tmp_path):
    """A plugin, first-party, an example of a third party's, or what ``aepipe new-plugin`` writes,
    imports aepipe's plugin API (``aepipe.plugin``) and the package root's public names, nothing
    else of aepipe."""
    import aepipe
    from aepipe.template import write

    new = write("aepipe-layered", tmp_path)
    wrong = []
    for path, line, module, names in plugin_imports() + plugin_imports([new]):
        if module == "aepipe.plugin" or (module == "aepipe" and names and set(names) <= set(aepipe.__all__)):
            continue
        wrong.append(f"{path}:{line} imports {module} {names or ''}".rstrip())
    assert wrong == []
    assert any(module == "aepipe.plugin" for _, _, module, _ in plugin_imports())  # the walk sees them


def test_the_plugin_api_is_defined_below_the_cli():
    """What :mod:`aepipe.plugin` offers is defined in the layers a plugin may lean on (use cases at
    most: the testing helpers), and the facade itself imports nothing but the lazy loader (it sits
    with the use cases, beside the testing helpers it names and the guide that documents it)."""
    import aepipe.plugin

    assert {i.dst for i in imports() if i.src == "aepipe.plugin"} == {"aepipe.lazy"}
    for name, target in aepipe.plugin.NAMES.items():
        module = target.partition(":")[0]
        assert LAYER_OF[module] <= NAME.index("use cases"), f"{name} comes from {module} ({NAME[LAYER_OF[module]]})"


def test_a_non_editable_install_holds_every_package_and_resource():
    """pyproject finds its packages (setuptools' ``packages.find``, as a non-editable install does):
    each package folder of aepipe and of the first-party plugins is among them, and each file that
    is not Python (the report's page template) is package data of its package."""
    import tomllib

    from setuptools import find_packages

    setup = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    find = setup["packages"]["find"]
    found = {p for where in find["where"] for p in find_packages(str(PACKAGE.parent / where), include=find["include"])}
    for root in (PACKAGE, PACKAGE.parent / "plugins" / "aepipe_plugins"):
        packages = {".".join(p.relative_to(root.parent).parts) for p in [root, *root.rglob("*")]
                    if p.is_dir() and (p / "__init__.py").exists()}
        assert sorted(packages - found) == []
    data = setup.get("package-data", {})
    resources = [
        p
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    missing = [str(p.relative_to(PACKAGE.parent)) for p in resources
               if not any(p.match(g) for g in data.get(".".join(p.parent.relative_to(PACKAGE.parent).parts), []))]
    assert missing == []


#: the most lines a module of aepipe holds: one concern each
MAX_LINES = 450
#: modules over :data:`MAX_LINES` that other work is splitting, and their size today: the list only
#: shrinks (a module listed here that fits is an error: take it off), and none may grow
LONG_MODULES: dict[str, int] = {}


def test_no_module_is_over_the_line_limit():
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    over = {m: n for m, n in sizes.items() if n > MAX_LINES and n > LONG_MODULES.get(m, 0)}
    assert over == {}, f"modules over {MAX_LINES} lines (split them by concern)"
    fits = sorted(m for m in LONG_MODULES if sizes.get(m, 0) <= MAX_LINES)
    assert fits == [], "these fit now: take them off LONG_MODULES"


#: module-level functions that may share a name, and why
SHARED_FUNCTION_NAMES = {
    "main": "a program's entry point (console script, python -m): the name Python's tools look for",
    "aepipe_train_epoch": "a hook: pluggy matches the implementation (defaults) to its spec (hookspecs) by name",
    "__dir__": "a module's own attribute listing (PEP 562): each lazy facade (the root, the plugin API) lists its "
               "names",
}


def test_no_two_module_level_functions_share_a_name():
    """One function per name across the package, so that a name says which function it is."""
    where: dict[str, list[str]] = defaultdict(list)
    for module, path in modules().items():
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where[node.name].append(module)
    shared = {name: places for name, places in where.items() if len(places) > 1 and name not in SHARED_FUNCTION_NAMES}
    assert shared == {}, "rename by what each does"


@functools.cache
def _defined(path: Path) -> frozenset[str]:
    """The names a module defines or imports at module level (``if`` blocks included), and those
    its lazy facade offers (the keys of ``_LAZY`` or ``_NAMES``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            if any(isinstance(t, ast.Name) and t.id in ("_LAZY", "_NAMES") for t in targets) and isinstance(
                node.value, ast.Dict
            ):
                found.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    return frozenset(found)


def test_docstrings_name_modules_and_names_that_exist():
    """A cross-reference (``:mod:`aepipe.x```, ``:func:`~aepipe.x.f```...) names a module of the
    package and, after it, something that module defines."""
    mods = modules()
    role = re.compile(r":(mod|class|func|data|meth|attr|exc):`~?(aepipe(?:\.\w+)+)`")
    wrong = []
    for module, path in mods.items():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for kind, ref in role.findall(line):
                parts = ref.split(".")
                i = len(parts)
                while ".".join(parts[:i]) not in mods:
                    i -= 1
                rest = parts[i:]
                if (kind == "mod" and rest) or (rest and rest[0] not in _defined(mods[".".join(parts[:i])])):
                    wrong.append(f"{module}:{n}: {ref}")
    assert wrong == []


def test_the_use_cases_package_names_the_use_cases_that_live_elsewhere():
    """``aepipe.usecases`` holds some of the use-case layer; its docstring names each other module of
    the layer (a package's modules through the package), so that its layout reads as it is."""
    import aepipe.usecases

    doc = aepipe.usecases.__doc__
    layer = [m for m in LAYERS[NAME.index("use cases")][3] if not m.startswith("aepipe.usecases")]
    tops = [m for m in layer if not any(m.startswith(other + ".") for other in layer)]
    assert [m for m in tops if f":mod:`{m}`" not in doc] == []
