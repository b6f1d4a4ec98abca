"""Samplers and priors declare what they draw, bottlenecks what their code is, and ``aepipe
sample`` refuses in one line draws that do not fit the code (issue 33, item 6)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from aepipe.cli import cli
from aepipe.config import resolve
from aepipe.errors import ConfigError, PluginError
from aepipe.model import build_model
from aepipe.sampling import build_sampler, check_support
from aepipe.training import load_data, train

from conftest import QUIET_KEEP_MODEL

NETS = {"encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}}


def _model(pm, **model):
    pipeline = resolve(pm, tree={"data": {"name": "digits"}, "model": {**NETS, **model}})
    return build_model(pipeline, load_data(pipeline, torch.device("cpu")))


def test_normal_draws_into_a_one_hot_code_are_refused_and_its_own_prior_is_not(aepipe_pm):
    categorical = {"name": "categorical", "categories": 10}
    bare = _model(aepipe_pm, code_dim=20, bottleneck=categorical)
    with pytest.raises(ConfigError, match=r"^N\(0, I\) \(the model has no prior\) draws real vectors, but bottleneck "
                                          r"'categorical' gives one-hot groups: its draws would not be codes"):
        check_support(bare)
    with pytest.raises(ConfigError, match=r"^sampler 'prior' draws real vectors, but bottleneck 'categorical'"):
        check_support(bare, build_sampler(bare, "prior", pm=aepipe_pm))
    uniform = _model(aepipe_pm, code_dim=20, bottleneck=categorical, prior={"name": "categorical-uniform"})
    check_support(uniform)  # the bottleneck's own codes
    check_support(uniform, build_sampler(uniform, "prior", pm=aepipe_pm))  # 'prior' draws what the model's prior draws
    normal = _model(aepipe_pm, code_dim=20, bottleneck=categorical, prior={"name": "standard-normal"})
    with pytest.raises(ConfigError, match=r"^prior 'standard-normal' draws real vectors"):
        check_support(normal)
    from aepipe.artifacts import predict  # the served model's sample mode refuses them alike

    bare.meta = {"value_range": [0.0, 16.0]}
    with pytest.raises(ConfigError, match=r"^N\(0, I\) \(the model has no prior\) draws real vectors"):
        predict(bare, None, {"mode": "sample", "n": 2})
    uniform.meta = {"value_range": [0.0, 16.0]}
    assert predict(uniform, None, {"mode": "sample", "n": 2}).shape == (2, 64)


def test_samplers_of_real_vectors_fit_real_codes_and_not_codewords(aepipe_pm):
    vq = _model(aepipe_pm, code_dim=8, bottleneck={"name": "quantized", "codebook_size": 8, "groups": 2})
    with pytest.raises(ConfigError,
                       match=r"^sampler 'gmm' draws real vectors, but bottleneck 'quantized' gives codebook vectors"):
        check_support(vq, build_sampler(vq, "gmm", pm=aepipe_pm))
    check_support(vq, build_sampler(vq, "index-ar", pm=aepipe_pm))
    plain = _model(aepipe_pm, code_dim=8)
    check_support(plain)
    check_support(plain, build_sampler(plain, "gmm", pm=aepipe_pm))


def test_aepipe_sample_refuses_normal_draws_into_a_one_hot_code_in_one_line(aepipe_pm, store, tmp_path):
    tree = {"data": {"name": "digits"}, "train": {"epochs": 1, "batch_size": 256, "patience": 0},
            "model": {**NETS, "code_dim": 20, "bottleneck": {"name": "categorical", "categories": 10}}}
    result = train(resolve(aepipe_pm, tree=tree, overrides=QUIET_KEEP_MODEL), aepipe_pm)
    out = tmp_path / "s.npy"
    r = CliRunner().invoke(cli, ["sample", result.run_id, "-n", "4", "-o", str(out)])
    assert r.exit_code == 2 and not out.exists(), r.output
    assert (r.stderr.count("\n") == 1 and "N(0, I) (the model has no prior) draws real vectors" in r.stderr
            and "Traceback" not in r.stderr)


def test_a_prior_knows_its_device_by_a_buffer_and_one_without_is_told_how(aepipe_pm):
    from aepipe.components import ModelSpec, Prior

    spec = ModelSpec(input_dim=4, code_dim=2)
    normal = aepipe_pm.registry.get("prior", "standard-normal")
    assert normal(normal.Config(), spec).to(torch.float64).device == torch.device("cpu")

    class Bare(Prior):
        name = "bare"

    class Anchored(Prior):
        name = "anchored"

        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.register_buffer("anchor", torch.zeros(()), persistent=False)

    with pytest.raises(PluginError,
                       match=r"prior 'bare' has no parameter or buffer to know its device by: register one"):
        Bare(Bare.Config(), spec).device
    anchored = Anchored(Anchored.Config(), spec)
    assert anchored.device == torch.device("cpu") and "anchor" not in anchored.state_dict()
