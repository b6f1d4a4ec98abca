"""The fsq and residual-vq bottlenecks, the jointvae bottleneck's capacity schedule and the
two-stage sampler's choice of what it fits (issue 33)."""

from __future__ import annotations

import math

import pytest
import torch

from aepipe.config import resolve
from aepipe.model import build_model
from aepipe.training import load_data

NETS = {"encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}}


def _model(pm, **model):
    pipeline = resolve(pm, tree={"data": {"name": "digits"}, "model": {**NETS, **model}})
    data = load_data(pipeline, torch.device("cpu"))
    torch.manual_seed(0)
    return build_model(pipeline, data), data


def test_discrete_codes_come_back_from_their_indices(aepipe_pm):
    for bottleneck, code_dim in (({"name": "fsq", "levels": [5, 4, 3], "groups": 2}, 6),
                                 ({"name": "residual-vq", "stages": 3, "codebook_size": 8}, 8)):
        model, data = _model(aepipe_pm, code_dim=code_dim, bottleneck=bottleneck)
        x, y = data.train.head(64)
        model.train()
        model.step(x, y)  # the k-means start of the residual codebooks
        model.eval()
        with torch.no_grad():
            code = model.encode(x, y)
        indices = code.outputs["indices"]
        assert indices.shape == (64, model.bottleneck.index_shape()[0])
        assert torch.allclose(model.bottleneck.from_indices(indices), code.code, atol=1e-5), bottleneck["name"]


def test_residual_codebooks_move_after_the_step_not_in_its_forward(aepipe_pm):
    """The stages' codewords sum to the code, and the moving averages run in ``after_step`` on
    the step's batch: a step's loss sees the codebooks it started from."""
    model, data = _model(aepipe_pm, code_dim=8, bottleneck={"name": "residual-vq", "stages": 3, "codebook_size": 8})
    x, y = data.train.head(64)
    model.train()
    model.step(x, y)
    model.bottleneck.after_step()
    before = model.bottleneck.rvq.codebooks.clone()
    model.step(x, y)
    assert torch.equal(model.bottleneck.rvq.codebooks, before)  # the forward of a training step moved nothing
    model.bottleneck.after_step()
    assert not torch.equal(model.bottleneck.rvq.codebooks, before)  # the moving averages did
    with torch.no_grad():
        code = model.eval().encode(x, y)
    stages = model.bottleneck.stage_codes(code.outputs["indices"])
    assert stages.shape == (3, 64, 8) and torch.allclose(stages.sum(0), code.code, atol=1e-5)


def test_jointvae_capacities_rise_with_the_steps_and_evaluation_uses_their_maxima(aepipe_pm):
    bottleneck = {"name": "jointvae", "categories": 4, "discrete": 2, "continuous_capacity": 6.0,
                  "discrete_capacity": 50.0, "capacity_steps": 10}
    model, data = _model(aepipe_pm, code_dim=12, bottleneck=bottleneck, prior={"name": "jointvae-prior"})
    b = model.bottleneck.train()
    assert b.continuous == 4
    for steps, share in ((0, 0.0), (5, 0.5), (10, 1.0), (20, 1.0)):
        b.steps.fill_(steps)
        c, d = b.capacities()
        assert float(c) == pytest.approx(6.0 * share) and float(d) == pytest.approx(2 * math.log(4) * share)  # capped
    b.eval()
    assert b.capacities() == (6.0, pytest.approx(2 * math.log(4)))
    draws = model.prior.sample(5)
    assert draws.shape == (5, 12) and torch.equal(draws[:, 4:].sum(1), torch.full((5,), 2.0))  # one-hot groups


def test_two_stage_fits_the_codes_or_posterior_draws(aepipe_pm, monkeypatch):
    from aepipe.sampling import build_sampler
    from aepipe.training.metrics import fit_on_codes

    model, data = _model(aepipe_pm, code_dim=4, bottleneck={"name": "gaussian"}, prior={"name": "standard-normal"},
                         regularizers={"kl": {}})
    asked = []
    import aepipe_plugins.samplers.two_stage as module

    real = module.code_tensor
    monkeypatch.setattr(module, "code_tensor", lambda m, s, what="code": asked.append(what) or real(m, s, what=what))
    for fit_on in ("code", "sample"):
        sampler = build_sampler(model, "two-stage", {"fit_on": fit_on, "epochs": 2, "hidden": [8]}, pm=aepipe_pm)
        metrics = fit_on_codes(model, sampler, data.train)
        assert set(metrics) == {"two_stage_neg_elbo", "two_stage_gamma"} and bool(sampler.fitted)
    assert asked == ["code", "sample"]
