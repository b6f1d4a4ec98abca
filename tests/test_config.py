"""Pipeline files: layering, overrides and one-line errors naming file, key and expectation."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from aepipe.config import parse_override, resolve
from aepipe.errors import ConfigError

from conftest import PIPELINES


def write(tmp_path, text: str, name: str = "p.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_pipeline_resolves(aepipe_pm, path):
    pipeline = resolve(aepipe_pm, path)
    assert pipeline.settings.variant
    assert pipeline.flat()["data.name"]


def test_variant_defaults_file_and_set_layer_in_order(aepipe_pm, tmp_path):
    path = write(tmp_path, """
        variant = "weight-l1"
        [model]
        code_dim = 12
        [model.regularizers.weight-l1]
        lam = 0.5
    """)
    p = resolve(aepipe_pm, path, ["model.regularizers.weight-l1.lam=0.25", "train.epochs=3"])
    flat = p.flat()
    assert flat["model.encoder.name"] == "one-layer"  # from the variant
    assert flat["model.code_dim"] == 12  # from the file
    assert flat["model.regularizers.weight-l1.lam"] == 0.25  # from --set
    assert flat["train.epochs"] == 3
    assert flat["model.regularizers.weight-l1.include_biases"] is False  # component default filled in


def test_changing_a_components_name_drops_the_variants_settings_for_it(aepipe_pm, tmp_path):
    # the linear variant sets encoder.activation; the MLP encoder has its own keys
    path = write(tmp_path, 'variant = "linear"\n[model.encoder]\nname = "mlp"\nhidden = [32]\n')
    p = resolve(aepipe_pm, path)
    assert p.components["encoder"].name == "mlp"
    assert p.components["encoder"].config.hidden == [32]


def test_regularizer_can_be_disabled(aepipe_pm, tmp_path):
    path = write(tmp_path, 'variant = "weight-l2"\n')
    assert "weight-l2" in resolve(aepipe_pm, path).regularizers
    assert resolve(aepipe_pm, path, ["model.regularizers.weight-l2.enabled=false"]).regularizers == {}


def test_override_values_are_read_as_toml():
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a=[1, 2]") == {"a": [1, 2]}
    assert parse_override("a=true") == {"a": True}
    assert parse_override("a=cuda:0") == {"a": "cuda:0"}
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override("a..b=1")


MALFORMED = [
    ("bad toml", "variant = \n", r"p\.toml: not valid TOML: .*line 1"),
    ("unknown variant", 'variant = "nope"\n', r"p\.toml: variant: unknown variant 'nope'; available: .*vanilla"),
    ("unknown encoder", 'variant = "vanilla"\n[model.encoder]\nname = "mpl"\n',
     r"p\.toml: model\.encoder\.name: unknown encoder 'mpl'; available: conv, hvae, ladder, mlp, one-layer"),
    ("unknown dataset", 'variant = "vanilla"\n[data]\nname = "imagenet"\n',
     r"unknown dataset 'imagenet'; available: activations, digits, "),
    ("unknown core key", 'variant = "vanilla"\n[train]\nepochz = 3\n',
     r"p\.toml: unknown key 'train\.epochz' for the pipeline; valid keys: amp, batch_size, checkpoint_every, "
     r"checkpoint_seconds, compile, cuda_graphs, device, epochs, fused, lr, lr_schedule, "),
    ("unknown section", 'variant = "vanilla"\n[trian]\nepochs = 3\n',
     r"unknown key 'trian' for the pipeline; valid keys: data, description, evaluate, model, "),
    ("unknown component key", 'variant = "vanilla"\n[model.encoder]\nactivaton = "relu"\n',
     r"p\.toml: unknown key 'model\.encoder\.activaton' for encoder 'one-layer'; valid keys: activation, distribution, "
     r"min_std, name"),
    ("unknown dataset key", 'variant = "vanilla"\n[data]\nfolder = "x"\n',
     r"unknown key 'data\.folder' for dataset 'digits'; valid keys: in_memory, memory_fraction, name, prefetch, "
     r"split_seed, test_fraction, val_fraction, workers"),
    ("wrong type", 'variant = "vanilla"\n[model]\ncode_dim = "big"\n',
     r"p\.toml: 'model\.code_dim' = 'big': expected int: "),
    ("wrong literal", 'variant = "vanilla"\n[model]\nlikelihood = "poisson"\n',
     r"'model\.likelihood' = 'poisson': .*'bernoulli' or 'gaussian'"),
    ("out of range", 'variant = "vanilla"\n[train]\nepochs = 0\n',
     r"'train\.epochs' = 0: expected int: Input should be greater than or equal to 1"),
    ("negative lambda", 'variant = "weight-l1"\n[model.regularizers.weight-l1]\nlam = -1.0\n',
     r"'model\.regularizers\.weight-l1\.lam' = -1\.0: expected float: .*greater than or equal to 0"),
    ("section not a table", 'variant = "vanilla"\ntrain = 3\n', r"'train' = 3: expected a table"),
    ("no encoder", '[data]\nname = "digits"\n',
     r"no encoder chosen; set \[model.encoder\] name = \.\.\. \(available: conv, hvae, ladder, mlp, one-layer, resnet, "
     r"sae-encoder\)"),
    ("component without name", '[model.encoder]\nhidden = [3]\n[model.decoder]\nname="mlp"\n',
     r"\[model\.encoder\] needs a 'name'"),
    ("unknown regularizer", 'variant = "vanilla"\n[model.regularizers.weight-l3]\nlam = 1.0\n',
     r"model\.regularizers\.weight-l3\.name: unknown regularizer 'weight-l3'; available: .*weight-l1, weight-l2"),
    # strict types: a value of the wrong TOML type is an error, never coerced
    ("string for an int", 'variant = "vanilla"\n[model]\ncode_dim = "3"\n',
     r"'model\.code_dim' = '3': expected int: Input should be a valid integer"),
    ("float for an int", 'variant = "vanilla"\n[train]\nepochs = 3.0\n',
     r"'train\.epochs' = 3\.0: expected int: Input should be a valid integer"),
    ("int for a bool", 'variant = "vanilla"\n[train]\ncompile = 1\n', r"'train\.compile' = 1: expected bool"),
    ("string in a component list", 'variant = "deep"\n[model.encoder]\nhidden = ["64"]\n',
     r"'model\.encoder\.hidden\.0' = '64': .*valid integer"),
    ("string for a float", 'variant = "weight-l1"\n[model.regularizers.weight-l1]\nlam = "0.1"\n',
     r"'model\.regularizers\.weight-l1\.lam' = '0\.1': expected float"),
    # sizes that cannot overflow
    ("int beyond 64 bits", 'variant = "vanilla"\n[model]\ncode_dim = 100000000000000000000\n',
     r"'model\.code_dim' = 100000000000000000000: expected int: 100000000000000000000 does not fit a 64-bit integer"),
    ("int beyond 64 bits in a list", 'variant = "deep"\n[model.encoder]\nhidden = [64, 100000000000000000000]\n',
     r"'model\.encoder\.hidden' = \[64, 100000000000000000000\]: expected list: 100000000000000000000 does not fit a "
     r"64-bit integer"),
    # names MLflow accepts
    ("empty experiment", 'variant = "vanilla"\n[tracking]\nexperiment = ""\n',
     r"'tracking\.experiment' = '': expected str: String should have at least 1 character"),
    ("over-long experiment", f'variant = "vanilla"\n[tracking]\nexperiment = "{"x" * 300}"\n',
     r"'tracking\.experiment' = 'x{59}\.\.\. \(302 characters\): expected str: String should have at most 256 "
     r"characters"),
    ("experiment with spaces", 'variant = "vanilla"\n[tracking]\nexperiment = " mine"\n',
     r"'tracking\.experiment' = ' mine': expected str: has spaces at its start or end"),
    ("run name with a newline", 'variant = "vanilla"\n[tracking]\nrun_name = "a\\nb"\n',
     r"'tracking\.run_name' = 'a\\nb': .*has a control character"),
]


@pytest.mark.parametrize("text,pattern", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_pipeline_is_one_line_error(aepipe_pm, tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as exc:
        resolve(aepipe_pm, path)
    assert "\n" not in str(exc.value)


def test_a_toml_array_is_taken_for_a_tuple_setting(aepipe_pm, tmp_path):
    path = write(
        tmp_path,
        'variant = "vanilla"\n[data]\nname = "file"\npath = "x.npy"\nvalue_range = [0, 16]\nimage_shape = [1, 8, 8]\n',
    )
    config = resolve(aepipe_pm, path).dataset.config
    assert config.value_range == (0.0, 16.0) and config.image_shape == (1, 8, 8)
    with pytest.raises(ConfigError, match=r"'data\.image_shape\.1' = '8': .*valid integer"):
        resolve(aepipe_pm, path, ['data.image_shape=[1, "8", 8]'])


def test_error_in_a_set_override_names_the_override(aepipe_pm):
    with pytest.raises(ConfigError, match=r"^--set train\.batch_size=many: 'train\.batch_size' = 'many': expected int"):
        resolve(aepipe_pm, PIPELINES / "vanilla.toml", ["train.batch_size=many"])


def test_error_from_a_variant_default_names_the_file_when_the_file_set_it(aepipe_pm, tmp_path):
    path = write(tmp_path, 'variant = "vanilla"\n[model.decoder]\nname = "one-layer"\nwidth = 3\n')
    with pytest.raises(
        ConfigError, match=r"p\.toml: unknown key 'model\.decoder\.width' for decoder 'one-layer'; valid keys: name"
    ):
        resolve(aepipe_pm, path)


def test_missing_file(aepipe_pm, tmp_path):
    with pytest.raises(ConfigError, match=r"nothere\.toml: pipeline file not found"):
        resolve(aepipe_pm, tmp_path / "nothere.toml")


@pytest.mark.parametrize("args,pattern", [
    (["train", "{missing}"], "pipeline file not found"),
    (["train", "{bad}"], "unknown encoder 'mpl'"),
    (["train", "{good}", "--set", "train.epochs=zero"], "'train.epochs' = 'zero'"),
    (["train", "{good}", "--device", "cuda:7"], "train.device: 'cuda:7' asked for"),
])
def test_cli_reports_user_errors_in_one_line_with_exit_code_2(tmp_path, monkeypatch, args, pattern):
    from click.testing import CliRunner

    from aepipe.cli import cli

    monkeypatch.setenv("AEPIPE_HOME", str(tmp_path / "mlruns"))
    bad = write(tmp_path, 'variant = "vanilla"\n[model.encoder]\nname = "mpl"\n', "bad.toml")
    paths = {"missing": str(tmp_path / "missing.toml"), "bad": str(bad), "good": str(PIPELINES / "vanilla.toml")}
    argv = [a.format(**paths) for a in args]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and pattern in lines[0], result.stderr
    # --debug shows the traceback instead
    result = CliRunner().invoke(cli, ["--debug", *argv])
    assert result.exception is not None and not isinstance(result.exception, SystemExit)


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    import os

    bad = write(tmp_path, 'variant = "vanilla"\n[model.encoder]\nname = "mpl"\n', "bad.toml")
    out = subprocess.run(["aepipe", "train", str(bad)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "AEPIPE_HOME": str(tmp_path / "mlruns")})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"Error: {bad}: model.encoder.name: unknown encoder 'mpl'; available: conv, hvae, "
                                  "ladder, mlp, one-layer, resnet, sae-encoder")
