"""Fuzz (issue 12, item 6): valid pipeline files and command lines, mutated by Hypothesis (a
setting given a value of any type, a setting deleted, an unknown key, the file's text garbled, a
stray `--set`). Every outcome is exit 0 (it trained), or exit 2 with one line and no traceback;
never a run left RUNNING. Derandomized: the same examples on every run, so CI cannot flake; the
size keeps it to about a minute."""

from __future__ import annotations

import copy
import re
import tomllib

import pytest

from conftest import PIPELINES

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: the digits pipelines (embedded data: no download), one file per family
FILES = ["vanilla", "weight-l1", "sparse", "denoising", "contractive", "vae", "cvae", "aae", "linear", "wae-mmd",
         "rae-gp", "beta-tcvae", "svae", "msssim-vae", "miwae"]
#: every run trains one quiet epoch: the fuzz is about the input, not the training
LAST = ["train.epochs=1", "train.compile=false", "tracking.log_model=false", "tracking.log_images=false",
        "tracking.log_dataset=false", "tracking.system_metrics=false", "data.name='digits'"]


def _leaves(tree: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in tree.items():
        path = (*prefix, key)
        out += _leaves(value, path) if isinstance(value, dict) and value else [path]
    return out


def _keys() -> list[tuple]:
    """Every setting of every fuzzed pipeline, as the resolved pipelines spell them."""
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager

    pm = get_plugin_manager()
    keys = set()
    for name in FILES:
        keys.update(_leaves(resolve(pm, PIPELINES / f"{name}.toml").as_dict()))
    return sorted(keys)


KEYS = _keys()

values = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([0, -1, 2**63, -(2**70), 10**9, 10**15]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["", " x", "a" * 300, "cuda:7", "mps", "cpu", "relu", "gaussian", "mlp", "digits", "\n"]),
    st.lists(st.integers(-2, 70), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-1, 3), max_size=2),
)
mutations = st.lists(st.one_of(
    st.tuples(st.just("set"), st.sampled_from(KEYS), values),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("unknown"), st.sampled_from(KEYS), st.text(min_size=1, max_size=8), values),
), min_size=1, max_size=3)
garbles = st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 4), st.text(max_size=3)))
stray_sets = st.lists(st.one_of(st.text(max_size=25),
                                st.builds(lambda k, v: f"{'.'.join(k)}={v}", st.sampled_from(KEYS),
                                          st.sampled_from(["3", "-1", "x", "[1]", "{a=1}", "nan", "1e400", ""]))),
                      max_size=2)


def _apply(tree: dict, mutation: tuple) -> None:
    kind, path = mutation[0], mutation[1]
    parent = tree
    for part in path[:-1]:
        child = parent.get(part)
        if not isinstance(child, dict):
            child = parent[part] = {}
        parent = child
    if kind == "set":
        parent[path[-1]] = mutation[2]
    elif kind == "delete":
        parent.pop(path[-1], None)
    else:
        parent[mutation[2]] = mutation[3]


def _running_runs(home) -> list[str]:
    import mlflow

    db = home / "mlflow.db"
    if not db.exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return [r.info.run_id for r in client.search_runs(ids, "attributes.status = 'RUNNING'")] if ids else []


def _status(home, run_id: str) -> str:
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_run(run_id).info.status


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "mlruns"


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(FILES), changes=mutations, garble=garbles, extra=stray_sets)
def test_mutated_pipelines_and_arguments_exit_0_or_2_in_one_line(
    name, changes, garble, extra, fuzz_home, tmp_path, monkeypatch
):
    import tomli_w
    from click.testing import CliRunner

    from aepipe.cli import cli

    monkeypatch.setenv("AEPIPE_HOME", str(fuzz_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tree = tomllib.loads((PIPELINES / f"{name}.toml").read_text())
    tree = copy.deepcopy(tree)
    for change in changes:
        _apply(tree, change)
    try:
        text = tomli_w.dumps(tree)
    except (TypeError, ValueError):  # a value TOML cannot hold
        text = (PIPELINES / f"{name}.toml").read_text()
    if garble is not None:
        at, cut, insert = garble
        at %= max(1, len(text))
        text = text[:at] + insert + text[at + cut:]
    path = tmp_path / "fuzzed.toml"
    path.write_text(text)
    argv = ["train", str(path), "-q"]
    for item in [*extra, *LAST]:
        argv += ["--set", item]
    result = CliRunner().invoke(cli, argv)
    shown = f"\n--- {path.name} ---\n{text}\n--- argv: {argv[3:]}\n--- stderr:\n{result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(result.exception)) + shown)
    assert result.exit_code in (0, 2), shown
    assert "Traceback" not in result.stderr, shown
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), shown
    else:  # it trained: a finished run
        run_id = result.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"[0-9a-f]{32}", run_id), shown
        assert _status(fuzz_home, run_id) == "FINISHED", shown
    assert _running_runs(fuzz_home) == [], shown
