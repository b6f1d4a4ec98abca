"""The TOML pre-scan reads strings as TOML does on every Python the project accepts (3.11.0 and
later; CPython before 3.11.5 mis-matched possessive repeats, and Debian 12's python3 is 3.11.2):
brackets inside a multi-line string count for nothing."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from aepipe.config import MAX_DEPTH, check_nesting, tree_depth
from aepipe.errors import ConfigError

BRACKETS = "[" * 70 + " {{{ ]]] " + "[" * 30

MULTI_LINE = f'''\
variant = "vanilla"
description = """
A description of {BRACKETS}
with \\"\\"\\" escaped quotes, a \\\\ backslash, "one" and ""two"" quotes inside,
a line-ending backslash \\
   and the end of the string with two more quotes"""""
tag = \'\'\'
literal {BRACKETS} \\ no escapes here "" ''
\'\'\'
last = \'\'\'{BRACKETS}\'\'\'\'\'
[model.encoder]
hidden = [16, 8]  # {BRACKETS}
note = "{BRACKETS} \\" still one string"
lit = '{BRACKETS} " '
'''


def test_the_pre_scan_skips_brackets_in_multi_line_strings():
    tree = tomllib.loads(MULTI_LINE)
    assert BRACKETS in tree["description"] and BRACKETS in tree["tag"] and tree["last"].endswith("''")
    assert tree["description"].endswith('quotes""') and '\\ no escapes' in tree["tag"]
    assert check_nesting(MULTI_LINE, "f") == tree_depth(tree) == 4, sys.version  # model.encoder.hidden[]


@pytest.mark.parametrize("quote", ['"""', "'''"])
def test_a_pipeline_with_a_long_multi_line_description_full_of_brackets_is_read(aepipe_pm, tmp_path, quote):
    from aepipe.config import resolve

    description = "\n".join(f"line {i}: " + "[" * 70 + " {" for i in range(20))
    path = tmp_path / "p.toml"
    path.write_text(f'variant = "vanilla"\ndescription = {quote}\n{description}\n{quote}\n[model]\ncode_dim = 3\n')
    pipeline = resolve(aepipe_pm, Path(path))
    assert pipeline.settings.description.count("[") == 20 * 70 and pipeline.settings.model.code_dim == 3


def test_nesting_after_a_multi_line_string_is_still_counted():
    """The scan resumes at the string's true end: what follows is counted, line numbers included."""
    deep = "x = " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n"
    text = 'a = """\n[[[\n""" \nb = \'\'\'\n]]]\n\'\'\'\n' + deep
    with pytest.raises(ConfigError, match=rf"^f: line 7: nested more than {MAX_DEPTH} levels deep"):
        check_nesting(text, "f")
    # an unterminated multi-line string runs to the end: nothing after it counts, tomllib refuses it
    assert check_nesting('a = """\n' + deep, "f") == 1


def test_the_pre_scan_uses_no_possessive_repeats_or_atomic_groups():
    """They are what CPython before 3.11.5 mis-matches: a pattern of aepipe.config holding one
    would pass here on 3.11.7 and fail on Debian's 3.11.2."""
    import importlib
    import pkgutil

    import aepipe.config

    found = {f"{info.name}.{name}": value for info in pkgutil.iter_modules(aepipe.config.__path__, "aepipe.config.")
             for name, value in vars(importlib.import_module(info.name)).items()}
    assert any(isinstance(v, re.Pattern) for v in found.values())
    for name, value in found.items():
        patterns = value.values() if isinstance(value, dict) else [value]
        for pattern in patterns:
            if isinstance(pattern, re.Pattern):
                assert not re.search(r"(?<!\\)(?:[*+?}]\+|\(\?>)", pattern.pattern), (name, pattern.pattern)


@pytest.mark.parametrize("text", [
    '[[""]]\n\n["".""]\n"" = 0\n',  # found by test_input_limits' property on 3.11.2: 3 counted, 4 deep
    '[[a]]\n[[a.b]]\nc = 1\n[a.b.d]\ne = [1]\n',
    '[["a\\u0062"]]\n[ ab . "c" ]\nx = 1\n',  # the same name written two ways
    "[[a]]\n[b.a]\nx = 1\n",  # another table's part of the same name
])
def test_a_table_under_an_array_of_tables_counts_the_array(text):
    assert check_nesting(text, "f") == tree_depth(tomllib.loads(text))
