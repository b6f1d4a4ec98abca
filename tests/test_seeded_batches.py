"""``seeded_batches`` (the plugin API's seeded evaluation loop): the same draws every call, the
caller's random stream untouched, the model in evaluation mode meanwhile; and its users, the
denoising score and the importance-weighted NLL, repeatable figures."""

from __future__ import annotations

import torch

from aepipe.plugin import seeded_batches
from aepipe_plugins.corruptions.noise import denoising_mse
from aepipe_plugins.regularizers.kl import importance_weighted_nll

from helpers import built


def _vae(pm):
    _, model, data = built(pm, tree={"variant": "vae", "data": {"name": "digits"}}, overrides=["model.code_dim=3"],
                           seed=0)
    return model.train(), data


def test_the_draws_repeat_and_the_callers_stream_is_untouched(aepipe_pm):
    model, data = _vae(aepipe_pm)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = [(xb, torch.rand(2), model.training) for xb, _ in seeded_batches(model, data.test, batch=100, seed=1)]
    assert torch.equal(torch.rand(3), expected)  # the caller's generator is where it was
    assert model.training  # back in its own mode
    assert [mode for _, _, mode in first] == [False] * len(first)  # evaluation mode meanwhile
    assert torch.equal(torch.cat([xb for xb, _, _ in first]), data.x_test)  # the split's batches, in order
    again = [torch.rand(2) for _ in seeded_batches(model, data.test, batch=100, seed=1)]
    other = [torch.rand(2) for _ in seeded_batches(model, data.test, batch=100, seed=2)]
    assert all(torch.equal(a, b) for (_, a, _), b in zip(first, again, strict=True))
    assert not torch.equal(first[0][1], other[0])


def test_its_users_give_the_same_figure_every_call(aepipe_pm):
    model, data = _vae(aepipe_pm)

    def noise(x):
        return x + 0.3 * torch.randn_like(x)

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    mse = denoising_mse(model, noise, data.test)
    nll = importance_weighted_nll(model, data.test, None, 4)
    assert torch.equal(torch.rand(3), expected)
    assert denoising_mse(model, noise, data.test) == mse and importance_weighted_nll(model, data.test, None, 4) == nll
    assert denoising_mse(model, noise, data.test, seed=1) != mse
    assert model.training
