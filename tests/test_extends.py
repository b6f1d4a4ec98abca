"""A pipeline file that extends another (``extends = "base.toml"``): merged over its base, read
within the same limits, with one-line errors for a missing base, a cycle or too long a chain; the
shipped mnist5k pipelines hold only what differs from their digits siblings."""

from __future__ import annotations

import tomllib

import pytest

from aepipe.config import resolve
from aepipe.config.prescan import MAX_FILE_BYTES
from aepipe.config.reading import MAX_EXTENDS, read_pipeline_file, read_pipeline_layers
from aepipe.errors import ConfigError

from conftest import PIPELINES

BASE = """
variant = "vae"
description = "the base"

[model]
code_dim = 4

[model.encoder]
hidden = [32]

[train]
epochs = 3
lr = 2e-3
"""


def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def test_a_file_is_merged_over_the_file_it_extends(aepipe_pm, tmp_path):
    _write(tmp_path, "base.toml", BASE)
    (tmp_path / "sub").mkdir()
    derived = _write(tmp_path / "sub", "derived.toml",
                     'extends = "../base.toml"\ndescription = "derived"\n[model]\ncode_dim = 8\n[train]\nepochs = 5\n')
    p = resolve(aepipe_pm, derived)
    assert p.variant == "vae"  # the base's
    assert p.settings.description == "derived" and p.settings.model.code_dim == 8 and p.settings.train.epochs == 5
    assert p.settings.train.lr == 2e-3 and p.components["encoder"].config.hidden == [32]  # the base's
    assert "extends" not in p.as_dict()
    assert p.origins["train.epochs"] == str(derived) and p.origins["train.lr"] == str(tmp_path / "sub" / "../base.toml")
    assert read_pipeline_file(derived)["train"] == {"epochs": 5, "lr": 2e-3}
    assert [name for name, _ in read_pipeline_layers(derived)] == [str(tmp_path / "sub" / "../base.toml"), str(derived)]


def test_a_bad_setting_of_the_base_names_the_base(aepipe_pm, tmp_path):
    base = _write(tmp_path, "base.toml", BASE.replace("epochs = 3", "epochs = 0"))
    derived = _write(tmp_path, "derived.toml", 'extends = "base.toml"\n[model]\ncode_dim = 8\n')
    with pytest.raises(ConfigError, match=rf"^{base}: 'train\.epochs' = 0: expected int"):
        resolve(aepipe_pm, derived)


@pytest.mark.parametrize("extends, message", [
    ('"missing.toml"', r"^{d}: extends 'missing.toml': {t}/missing.toml: pipeline file not found$"),
    ('"derived.toml"',
     r"^{d}: extends 'derived.toml', a file of its own chain \(a cycle: derived.toml -> derived.toml\)$"),
    ("3", r"^{d}: 'extends' must name a pipeline file \(a string\), got 3$"),
    ('""', r"^{d}: 'extends' must name a pipeline file \(a string\), got ''$"),
])
def test_a_base_that_cannot_be_read_is_one_line(aepipe_pm, tmp_path, extends, message):
    derived = _write(tmp_path, "derived.toml", f"extends = {extends}\n")
    with pytest.raises(ConfigError, match=message.format(d=derived, t=tmp_path)) as exc:
        resolve(aepipe_pm, derived)
    assert "\n" not in str(exc.value)


def test_a_cycle_and_a_long_chain_are_refused(aepipe_pm, tmp_path):
    _write(tmp_path, "a.toml", 'extends = "b.toml"\n')
    _write(tmp_path, "b.toml", 'extends = "c.toml"\n')
    _write(tmp_path, "c.toml", 'extends = "a.toml"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: extends 'a\.toml', a file of its own chain "
                                          r"\(a cycle: a\.toml -> b\.toml -> c\.toml -> a\.toml\)$"):
        resolve(aepipe_pm, tmp_path / "a.toml")
    names = [f"f{i}.toml" for i in range(MAX_EXTENDS + 1)]
    for name, base in zip(names, names[1:]):
        _write(tmp_path, name, f'extends = "{base}"\n')
    _write(tmp_path, names[-1], BASE)
    with pytest.raises(ConfigError, match=rf"f{MAX_EXTENDS - 1}\.toml: extends 'f{MAX_EXTENDS}\.toml': a chain of "
                                          rf"more than {MAX_EXTENDS} pipeline files$"):
        resolve(aepipe_pm, tmp_path / names[0])
    _write(tmp_path, names[-2], BASE)  # MAX_EXTENDS files: read
    assert resolve(aepipe_pm, tmp_path / names[0]).settings.model.code_dim == 4


def test_the_base_is_read_within_the_limits_of_a_pipeline_file(tmp_path):
    _write(tmp_path, "base.toml", "# " + "x" * MAX_FILE_BYTES + "\n")
    derived = _write(tmp_path, "derived.toml", 'extends = "base.toml"\n')
    with pytest.raises(ConfigError, match=r"^.*derived\.toml: extends 'base\.toml': .*base\.toml: \d+ bytes; "
                                          r"a pipeline file may hold at most"):
        read_pipeline_file(derived)


def test_each_mnist5k_pipeline_holds_only_what_differs_from_its_digits_sibling():
    derived = sorted(PIPELINES.glob("*-mnist5k.toml"))
    assert len(derived) >= 29
    for path in derived:
        tree = tomllib.loads(path.read_text())
        sibling = path.name.replace("-mnist5k", "")
        assert tree.pop("extends") == sibling, path.name
        base = tomllib.loads((PIPELINES / sibling).read_text())
        same = _same_leaves(base, tree)
        assert same == [], f"{path.name} repeats {same} of {sibling}"


def _same_leaves(base: dict, tree: dict, prefix: str = "") -> list[str]:
    """The settings of ``tree`` that repeat ``base`` (a search-space entry counts as one)."""
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and prefix != "tune.space.":
            out += _same_leaves(base[key], value, f"{prefix}{key}.")
        elif key in base and base[key] == value:
            out.append(prefix + key)
    return out
