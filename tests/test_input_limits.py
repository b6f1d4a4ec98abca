"""Input within limits before parsing (issue 19, item 1): a pipeline file's size, key depth and
nesting, and each ``--set``, are bounded before ``tomllib`` sees them (``MAX_FILE_BYTES``,
``MAX_DEPTH``); beyond the bounds, one line and exit 2, fast and in a few MB. Strings and comments
never count, so a legitimate file is never refused; every recursion over the tree is bounded or
iterative."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tracemalloc

import pytest
from click.testing import CliRunner

from aepipe.config import (MAX_DEPTH, MAX_FILE_BYTES, check_nesting, flatten, parse_override, read_pipeline_file,
                           resolve, tree_depth)
from aepipe.config.tree import all_prefixes
from aepipe.errors import ConfigError
from aepipe.strict import out_of_int64

DEEP = 1000
#: hostile files: (name, text); each would exhaust memory or the stack without the bounds
HOSTILE = {
    "a 100,000-part dotted key": "a" + ".a" * 99_999 + " = 1\n",
    "arrays 1,000 deep": "x = " + "[" * DEEP + "]" * DEEP + "\n",
    "inline tables 1,000 deep": "x = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n",
    "a table header 1,000 parts deep": "[" + ".".join(["t"] * DEEP) + "]\nk = 1\n",
    "an array of tables 1,000 parts deep": "[[" + ".".join(["t"] * DEEP) + "]]\nk = 1\n",
    "table headers one level deeper each": "".join(f"[{'.'.join(['t'] * n)}]\nk = {n}\n" for n in range(1, 200)),
}
TOO_DEEP = rf"nested more than {MAX_DEPTH} levels deep .*aepipe reads at most {MAX_DEPTH}"


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_file_is_one_line_before_it_is_parsed(tmp_path, name):
    path = tmp_path / "p.toml"
    path.write_text(HOSTILE[name])
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=rf"p\.toml: line \d+: {TOO_DEEP}") as exc:
            read_pipeline_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 300
    assert peak < 8e6, f"{peak / 1e6:.1f} MB to refuse it"


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
@pytest.mark.parametrize(
    "name", ["a 100,000-part dotted key", "arrays 1,000 deep", "a table header 1,000 parts deep", "too large"]
)
def test_aepipe_train_refuses_a_hostile_file_under_a_memory_limit(tmp_path, name):
    """The installed command, in a process limited to 1.5 GB of address space: exit 2, one line
    on stderr, in seconds (before the bounds: 23.7 GB and the OOM killer, or a RecursionError)."""
    path = tmp_path / "p.toml"
    path.write_text(HOSTILE[name] if name != "too large" else "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    env = {**os.environ, "AEPIPE_HOME": str(tmp_path / "mlruns")}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.monotonic()
    out = subprocess.run(["prlimit", f"--as={1_500_000_000}", sys.executable, "-m", "aepipe.cli", "train", str(path)],
                         capture_output=True, text=True, env=env, timeout=60)
    seconds = time.monotonic() - start
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    expected = "at most 1048576 \\(1 MiB\\)" if name == "too large" else TOO_DEEP
    assert lines[0].startswith(f"Error: {path}: ") and re.search(expected, lines[0]), lines[0]
    assert seconds < 10, f"{seconds:.1f} s"
    assert not (tmp_path / "mlruns").exists()  # refused before any store is touched


def test_a_file_over_the_size_bound_is_refused_unread(tmp_path):
    path = tmp_path / "big.toml"
    with open(path, "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: reading it would be the only cost
    with pytest.raises(
        ConfigError, match=rf"big\.toml: {MAX_FILE_BYTES + 1} bytes; a pipeline file may hold at most {MAX_FILE_BYTES}"
    ):
        read_pipeline_file(path)
    path.write_text("x = 1\n" + "#" * (MAX_FILE_BYTES - 7) + "\n")  # exactly at the bound: read
    assert os.path.getsize(path) == MAX_FILE_BYTES and read_pipeline_file(path) == {"x": 1}


@pytest.mark.parametrize("kind, make", [
    ("dotted key", lambda n: "a" + ".a" * (n - 1) + " = 1\n"),
    ("table header", lambda n: "[" + ".".join(["a"] * (n - 1)) + "]\nb = 1\n"),
    ("array of tables", lambda n: "[[" + ".".join(["a"] * (n - 2)) + "]]\nb = 1\n"),
    ("arrays", lambda n: "x = " + "[" * (n - 1) + "]" * (n - 1) + "\n"),
    ("inline tables", lambda n: "x = " + "{a = " * (n - 1) + "1" + "}" * (n - 1) + "\n"),
    ("all together", lambda n: "[a.b]\nc.d = " + "[{e = " * ((n - 4) // 2) + "1" + "}]" * ((n - 4) // 2) + "\n"),
])
def test_the_bound_is_exact_for_every_kind_of_nesting(tmp_path, kind, make):
    """MAX_DEPTH levels are read (and tomllib agrees on the depth); one more is refused."""
    import tomllib

    at_bound = make(MAX_DEPTH)
    assert check_nesting(at_bound, "f") == MAX_DEPTH == tree_depth(tomllib.loads(at_bound))
    with pytest.raises(ConfigError, match=TOO_DEEP):
        check_nesting(make(MAX_DEPTH + 2 if kind == "all together" else MAX_DEPTH + 1), "f")


LEGITIMATE = '''
# a comment with [brackets], {braces}, "quotes" and a.dotted.key = [[[[[[
variant = "vanilla"   # trailing [[[ comment
description = """
A multi-line description: [[[[[[[[ {{{{{{{{ a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r
# not a comment, "quotes" and 'apostrophes', an escaped \\""" and two quotes at the end ""\"""

[model]
"code_dim" = 8   # a quoted key
model.likelihood = "bernoulli"   # dotted keys under a table (model.model.likelihood is not a setting: removed below)

[model.encoder]
name = 'mlp'
hidden = [
  16,   # ]]]] in a comment
  8,
]

[tracking]
experiment = "x[1].y{2}.z#3"
run_name = \'\'\'literal [[[ {{{ a.b.c "" \'\' #\'\'\'
'''  # noqa: E501 - the description's long line of brackets and braces is the test's data


def test_a_legitimate_pipeline_with_brackets_dots_and_quotes_in_strings_is_accepted(aepipe_pm, tmp_path):
    import tomllib

    text = LEGITIMATE.replace('model.likelihood = "bernoulli"   # dotted keys under a table (model.model.likelihood is '
                              'not a setting: removed below)\n', "")
    path = tmp_path / "p.toml"
    path.write_text(text)
    pipeline = resolve(aepipe_pm, path)
    assert pipeline.settings.model.code_dim == 8 and list(pipeline.components["encoder"].config.hidden) == [16, 8]
    assert pipeline.settings.tracking.experiment == "x[1].y{2}.z#3"
    assert pipeline.settings.tracking.run_name == 'literal [[[ {{{ a.b.c "" \'\' #'
    assert pipeline.settings.description.endswith('two quotes at the end ""')
    assert check_nesting(LEGITIMATE, "f") == tree_depth(tomllib.loads(LEGITIMATE)) == 4  # model.encoder.hidden[]


def test_the_scan_agrees_with_tomllib_on_every_tree_tomli_w_writes():
    """Property: for any tree (keys and strings full of brackets, dots, quotes, '#' and
    newlines), the depth counted on its TOML text is the depth of the tree tomllib reads back."""
    pytest.importorskip("hypothesis")
    import tomllib

    import tomli_w
    from hypothesis import given, settings
    from hypothesis import strategies as st

    text = st.text(alphabet="ab.[]{}\"'#=,\\ \n\t", max_size=6)
    scalars = st.one_of(st.integers(-5, 5), st.booleans(), text, st.floats(allow_nan=False))
    trees = st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
        max_leaves=12,
    )

    @settings(max_examples=150, derandomize=True, deadline=None)
    @given(st.dictionaries(text, trees, max_size=4))
    def check(tree):
        dumped = tomli_w.dumps(tree)
        assert tomllib.loads(dumped) == tree
        assert check_nesting(dumped, "f") == tree_depth(tree), dumped

    check()


def test_set_with_a_huge_dotted_key_or_a_deep_value_is_one_line(tmp_path):
    from aepipe.cli import cli

    huge = "a" + ".a" * 99_999 + "=1"
    with pytest.raises(
        ConfigError,
        match=rf"--set 'a\.a\.a.*\.\.\. \(200001 characters\): a key of 100000 parts; aepipe reads at most {MAX_DEPTH}",
    ):
        parse_override(huge)
    for value in ("[" * DEEP + "]" * DEEP, "{a=" * DEEP + "1" + "}" * DEEP):
        with pytest.raises(ConfigError, match=rf"--set 'x\.y=.*: line 1: {TOO_DEEP}"):
            parse_override(f"x.y={value}")
    with pytest.raises(ConfigError, match=rf"longer than {MAX_FILE_BYTES} characters"):
        parse_override("description=" + "x" * MAX_FILE_BYTES)
    assert parse_override("x.y=[[1], {a = [2]}]") == {"x": {"y": [[1], {"a": [2]}]}}
    assert parse_override("a" + ".a" * (MAX_DEPTH - 2) + "=[1]") == flatten_to(MAX_DEPTH - 1, [1])
    (tmp_path / "p.toml").write_text('variant = "vanilla"\n')
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "p.toml"), "--set", huge])
    assert result.exit_code == 2 and time.monotonic() - start < 5
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --set 'a.a.a") and "a key of 100000 parts" in lines[0], (
        result.output[-500:]
    )


def flatten_to(depth: int, leaf):
    tree = leaf
    for _ in range(depth):
        tree = {"a": tree}
    return tree


def test_a_tree_or_tuning_values_beyond_the_bound_are_refused(aepipe_pm):
    with pytest.raises(
        ConfigError, match=rf"<pipeline>: nested {DEEP + 1} levels deep; aepipe reads at most {MAX_DEPTH}"
    ):
        resolve(aepipe_pm, tree={"variant": "vanilla", "tune": flatten_to(DEEP, 1)})
    with pytest.raises(
        ConfigError, match=rf"\[tune\.space\] 'a\.a\.a.*: a key of {DEEP} parts; aepipe reads at most {MAX_DEPTH}"
    ):
        resolve(
            aepipe_pm, tree={"variant": "vanilla"}, values={".".join(["a"] * DEEP): 1}, values_origin="[tune.space]"
        )


def test_the_helpers_that_walk_a_tree_are_iterative():
    """flatten, the origins' prefixes, the tree's depth and the 64-bit check walk any depth
    without recursion (Python's limit is 1,000 frames)."""
    tree = flatten_to(5 * DEEP, 7)
    key = ".".join(["a"] * 5 * DEEP)
    assert flatten(tree) == {key: 7}
    prefixes = all_prefixes(tree)
    assert len(prefixes) == 5 * DEEP and prefixes[-1] == key and prefixes[0] == "a"
    assert tree_depth(tree) == 5 * DEEP
    nested: list = [2**64]
    for _ in range(5 * DEEP):
        nested = [1, nested, {"k": True}]
    assert out_of_int64(nested) == 2**64 and out_of_int64([1, [2, {"a": [2**63 - 1, -(2**63)]}]]) is None
    assert flatten({"a": {"b": 1, "c": {}, "d": {"e": [1]}}, "f": 2}) == {"a.b": 1, "a.d.e": [1], "f": 2}
    assert all_prefixes({"a": {"b": 1, "c": {}}, "f": 2}) == ["a", "a.b", "a.c", "f"]
