"""The layers of aepipe, checked: every module has its place in :data:`LAYERS`, imports nothing
from a higher layer (at module level or inside a function; type-only imports upward only where
:data:`TYPE_ONLY_UP` says), no module takes part in an import cycle, the light layers import no
torch, MLflow or Optuna at module level, a package's ``__init__`` pulls in nothing above the lowest
of its modules, and the CLI only parses, calls a use case, prints and maps errors.

The imports are read from the source (``ast``), so a function-local import counts as much as a
module-level one: what the table forbids cannot hide inside a function."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aepipe"

#: bottom to top: (layer, what it holds, light: no torch/MLflow/Optuna at module level, modules)
LAYERS: list[tuple[str, str, bool, list[str]]] = [
    ("base", "types, errors and helpers every layer may use", True, [
        "aepipe.version", "aepipe.lazy", "aepipe.errors", "aepipe.strict", "aepipe.kinds", "aepipe.variant", "aepipe.files",
        "aepipe.secrets", "aepipe.arrays", "aepipe.figures", "aepipe.limits", "aepipe.seeds",
    ]),
    ("contract: hooks", "the hooks a plugin implements and the run context they receive", True, [
        "aepipe.hookspecs", "aepipe.context",
    ]),
    ("contract: components", "the component base classes (torch modules) and the data types they exchange", False, [
        "aepipe.components",
    ]),
    ("registry", "plugins found through entry points, components by kind and name", True, [
        "aepipe.plugins", "aepipe.defaults",
    ]),
    ("configuration", "the pipeline file as typed settings; the metric vocabulary", True, [
        "aepipe.config", "aepipe.evaluation",
    ]),
    ("assembly", "models, data, devices, optimizers, samplers and the measurements of a model in memory", False, [
        "aepipe.likelihoods", "aepipe.model", "aepipe.data", "aepipe.stats", "aepipe.sampling",
        "aepipe.training.device", "aepipe.training.setup", "aepipe.training.measure", "aepipe.training.state",
        "aepipe.training.distributed", "aepipe.training.schedules", "aepipe.training.resume", "aepipe.training.step",
        "aepipe.training.assemble",
        "aepipe.evaluation.basic", "aepipe.evaluation.disentanglement", "aepipe.evaluation.generation",
        "aepipe.evaluation.ladder", "aepipe.evaluation.measure",
    ]),
    ("storage", "model files, the pyfunc flavour, the run store and its trackers, runs read back", False, [
        "aepipe.artifacts", "aepipe.serving", "aepipe.tracking", "aepipe.tracking.base", "aepipe.tracking.store",
        "aepipe.tracking.sweep", "aepipe.tracking.memory", "aepipe.tracking.mlflow_tracker", "aepipe.runs",
    ]),
    ("lifecycle", "a training run from start to end; a study's workers and records", False, [
        "aepipe.training", "aepipe.training.epoch", "aepipe.training.loop", "aepipe.training.report",
        "aepipe.training.launch", "aepipe.tune", "aepipe.tune.study", "aepipe.tune.optuna_adapter", "aepipe.tune.record",
        "aepipe.tune.worker", "aepipe.tune.supervise",
    ]),
    ("use cases", "what a user asks for, as plain functions: the API the CLI and notebooks call", False, [
        "aepipe.usecases", "aepipe.usecases.train", "aepipe.usecases.tune", "aepipe.usecases.arrays",
        "aepipe.usecases.plugins", "aepipe.usecases.fid", "aepipe.evaluation.run", "aepipe.evaluation.report",
        "aepipe.evaluation.reference", "aepipe.zoo", "aepipe.compare",
        "aepipe.ui", "aepipe.template", "aepipe.testing", "aepipe.guide",
    ]),
    ("cli", "parses options, calls one use case, prints, maps errors to exit codes", True, [
        "aepipe.console", "aepipe.cli",
    ]),
    ("api", "the package root: the plugin marker and version; every other name is a lazy facade", True, [
        "aepipe",
    ]),
]

#: type-only imports (under ``if TYPE_CHECKING``) allowed to point upward: the contract names the
#: types its hooks receive and return
TYPE_ONLY_UP: set[tuple[str, str]] = {
    ("aepipe.components", "aepipe.model"),
    ("aepipe.components", "aepipe.plugins"),
    ("aepipe.context", "aepipe.config"),
    ("aepipe.context", "aepipe.data"),
    ("aepipe.context", "aepipe.model"),
    ("aepipe.context", "aepipe.tracking.base"),
    ("aepipe.context", "aepipe.training.state"),
    ("aepipe.hookspecs", "aepipe.context"),
}

HEAVY = ("torch", "mlflow", "optuna")
#: the CLI's imports: use cases, and what it needs to print and map errors
CLI_MAY_IMPORT = {"aepipe.errors", "aepipe.secrets", "aepipe.version", "aepipe.tracking.store", "aepipe.plugins", "aepipe.console"}
CLI_MAX_LINES = 600

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
    """Cycles among modules (type-only imports aside), through function-local imports too."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in imports():
        if imp.kind != "type":
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
        wrong += [f"{package}:{i.line} imports {i.dst} ({NAME[LAYER_OF[i.dst]]}) at module level; its lowest module is "
                  f"{NAME[lowest]}" for i in imports() if i.src == package and i.kind == "top" and LAYER_OF[i.dst] > lowest]
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


def test_the_cli_is_thin():
    path = modules()["aepipe.cli"]
    lines = len(path.read_text().splitlines())
    assert lines <= CLI_MAX_LINES, f"aepipe/cli.py has {lines} lines"
    allowed = CLI_MAY_IMPORT | {m for m in LAYER_OF if LAYER_OF[m] == NAME.index("use cases")}
    reached = sorted({f"{i.dst} (line {i.line})" for i in imports() if i.src == "aepipe.cli" and i.dst not in allowed
                      and i.dst != "aepipe.cli"})
    assert reached == [], "the CLI calls use cases only"
    external = {i.dst for i in imports(external=True) if i.src == "aepipe.cli" and not i.dst.startswith("aepipe")}
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
            rows[cells[0].replace(" (light)", "")] = (cells[0].endswith("(light)"), set(re.findall(r"`([\w.]+)`", cells[2])))
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
            allowed = HEAVY_BELOW_LIFECYCLE.get(NAME[LAYER_OF[i.src]], set()) | HEAVY_MODULES_BELOW_LIFECYCLE.get(i.src, set())
            if i.dst not in allowed:
                wrong.append(f"{i.src}:{i.line} imports {i.dst} at module level")
    assert wrong == []
