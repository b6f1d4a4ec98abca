"""The categorical bottleneck (Gumbel-softmax with an annealed temperature), its uniform prior
and the categorical VAE on held-out digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from aepipe.components import Encoding, ModelSpec
from aepipe.config import resolve
from aepipe.errors import ConfigError
from aepipe.model import build_model
from aepipe.training import load_data, train
from aepipe_plugins.bottlenecks.gumbel import CategoricalBottleneck, CategoricalConfig

from conftest import PIPELINES, store_at, use_store, QUIET_KEEP_MODEL

#: the models here train on one CPU thread (zoo_shared.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = QUIET_KEEP_MODEL


def _bottleneck(code_dim: int = 12, **settings) -> CategoricalBottleneck:
    return CategoricalBottleneck(CategoricalConfig(categories=4, **settings), ModelSpec(input_dim=5, code_dim=code_dim))


def test_the_temperature_anneals_to_its_floor_and_survives_a_state_dict_round_trip():
    b = _bottleneck(temperature=2.0, min_temperature=0.5, anneal_rate=0.01, warmup_steps=10, beta=3.0)
    seen = [b.temperature()]
    for _ in range(200):
        b.after_step()
        seen.append(b.temperature())
    assert seen[0] == 2.0 and seen[50] == pytest.approx(2.0 * math.exp(-0.5))
    assert all(a >= c for a, c in zip(seen, seen[1:])) and seen[10] < seen[0]
    assert seen[-1] == 0.5  # the floor: 2 exp(-2) < 0.5
    assert b.kl_weight() == 3.0  # the warm-up is over
    restored = _bottleneck(temperature=2.0, min_temperature=0.5, anneal_rate=0.01, warmup_steps=10, beta=3.0)
    b5 = _bottleneck(temperature=2.0, min_temperature=0.5, anneal_rate=0.01, warmup_steps=10, beta=3.0)
    for _ in range(5):
        b5.after_step()
    restored.load_state_dict(b5.state_dict())  # what a checkpoint holds
    assert restored.temperature() == b5.temperature() == pytest.approx(2.0 * math.exp(-0.05))
    assert restored.kl_weight() == pytest.approx(1.5)  # half-way through the warm-up
    restored.eval()
    assert restored.kl_weight() == 3.0  # evaluation always uses beta


def test_codes_draws_and_the_kl_to_the_uniform_prior():
    torch.manual_seed(0)
    b = _bottleneck(hard=False)
    logits = torch.randn(6, 12, requires_grad=True)
    b.eval()
    code = b(Encoding(logits), None, 3)
    indices = code.outputs["indices"]
    assert indices.shape == (6, 3) and indices.dtype == torch.long
    assert torch.equal(indices, logits.reshape(6, 3, 4).argmax(-1))
    assert torch.equal(code.code, b.from_indices(indices))  # the code is the one-hot argmax
    assert code.code.reshape(6, 3, 4).sum(-1).eq(1).all() and code.code.reshape(6, 3, 4).amax(-1).eq(1).all()
    # evaluation decodes exact one-hot draws of q (the discrete model's ELBO)
    assert code.z.shape == (18, 12) and code.z.reshape(18, 3, 4).amax(-1).eq(1).all()
    # the KL to the uniform categorical, summed over latents, against torch's
    q = torch.distributions.Categorical(logits=logits.reshape(6, 3, 4))
    uniform = torch.distributions.Categorical(probs=torch.full((6, 3, 4), 0.25))
    expected = torch.distributions.kl_divergence(q, uniform).sum(-1).mean()
    assert torch.allclose(code.losses["kl"], expected)
    assert torch.allclose(code.outputs["probs"].reshape(6, 3, 4), q.probs)
    # training: relaxed draws on the simplex with a gradient; hard: one-hot straight through
    b.train()
    soft = b(Encoding(logits), None, 2).z.reshape(12, 3, 4)
    assert torch.allclose(soft.sum(-1), torch.ones(12, 3)) and (soft.amax(-1) < 1).any()
    hard = _bottleneck(hard=True)
    z = hard(Encoding(logits), None, 2).z
    assert z.reshape(12, 3, 4).amax(-1).eq(1).all()
    z.pow(2).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def _pipeline(pm, **model):
    tree = {"variant": "categorical-vae", "data": {"name": "digits"},
            "model": {"code_dim": 20, "encoder": {"name": "mlp", "hidden": [32]},
                      "decoder": {"name": "mlp", "hidden": [32]}, **model}}
    return resolve(pm, tree=tree)


def test_bad_settings_are_one_line_errors(aepipe_pm):
    p = _pipeline(aepipe_pm, code_dim=15)
    data = load_data(p, torch.device("cpu"))
    with pytest.raises(
        ConfigError,
        match=r"model.bottleneck \(bottleneck 'categorical'\): code_dim 15 is not a multiple of categories 10",
    ) as err:
        build_model(p, data)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="min_temperature 2.0 exceeds the initial temperature 1.0"):
        build_model(_pipeline(aepipe_pm, bottleneck={"name": "categorical", "min_temperature": 2.0}), data)
    # its KL is its own loss term: the kl regularizer would count it twice
    with pytest.raises(ConfigError, match="bottleneck 'categorical' logs penalty.kl and so does the regularizer"):
        build_model(_pipeline(aepipe_pm, regularizers={"kl": {}}), data)
    # the uniform prior draws the codes of a discrete bottleneck only
    vae = resolve(
        aepipe_pm,
        tree={"variant": "vae", "data": {"name": "digits"}, "model": {"prior": {"name": "categorical-uniform"}}},
    )
    with pytest.raises(ConfigError,
                       match="prior 'categorical-uniform' draws the codes of a discrete bottleneck .* bottleneck "
                             "'gaussian' gives continuous codes"):
        build_model(vae, data)


def test_the_uniform_prior_draws_one_hot_codes_uniformly(aepipe_pm):
    p = _pipeline(aepipe_pm)
    model = build_model(p, load_data(p, torch.device("cpu")))
    torch.manual_seed(0)
    z = model.draw_codes(5000)  # no sampler: through the prior
    assert z.shape == (5000, 20)
    onehot = z.reshape(5000, 2, 10)
    assert onehot.sum(-1).eq(1).all() and onehot.amax(-1).eq(1).all()
    freq = onehot.mean(0)
    assert (freq - 0.1).abs().max() < 0.02  # each category of each latent about 1 in 10


@pytest.fixture(scope="module")
def categorical_run(tmp_path_factory):
    """A small categorical VAE run with its model logged, in its own store."""
    from aepipe.plugins import get_plugin_manager

    home = tmp_path_factory.mktemp("categorical-store") / "mlruns"
    pm = get_plugin_manager()
    with store_at(home):
        tree = {"variant": "categorical-vae", "data": {"name": "digits"}, "train": {"epochs": 3, "patience": 0},
                "model": {"code_dim": 40, "encoder": {"name": "mlp", "hidden": [64]},
                          "decoder": {"name": "mlp", "hidden": [64]},
                          "bottleneck": {"name": "categorical", "categories": 8, "anneal_rate": 0.01}}}
        yield train(resolve(pm, tree=tree, overrides=QUIET), pm), home


def test_encode_indices_and_the_logged_temperature(categorical_run, monkeypatch, tmp_path):
    from aepipe.cli import cli

    result, home = categorical_run
    use_store(monkeypatch, home)
    # the schedule's clock advanced once per optimizer step, and each epoch logged the temperature
    temps = [h["val_temperature"] for h in result.history]
    assert len(temps) == 3 and temps[0] > temps[1] > temps[2] >= 0.5
    steps = int(result.model.bottleneck.steps)
    assert steps > 0 and temps[-1] == pytest.approx(max(0.5, math.exp(-0.01 * steps)))
    np.save(tmp_path / "x.npy", result.data.x_test[:25].numpy() * 16.0)  # raw units
    runner = CliRunner()
    out = {}
    for what in ("indices", "code", "probs"):
        r = runner.invoke(
            cli, ["encode", result.run_id, str(tmp_path / "x.npy"), "--what", what, "-o", str(tmp_path / f"{what}.npy")]
        )
        assert r.exit_code == 0, r.output
        out[what] = np.load(tmp_path / f"{what}.npy")
    indices = out["indices"]
    assert indices.shape == (25, 5) and np.issubdtype(indices.dtype, np.integer)
    assert indices.min() >= 0 and indices.max() < 8 and len(np.unique(indices)) > 1
    assert np.array_equal(np.eye(8)[indices].reshape(25, 40), out["code"])  # the code is their one-hot
    assert np.allclose(out["probs"].reshape(25, 5, 8).sum(-1), 1.0, atol=1e-5)
    r = runner.invoke(
        cli, ["encode", result.run_id, str(tmp_path / "x.npy"), "--what", "mean", "-o", str(tmp_path / "m.npy")]
    )
    assert r.exit_code == 2 and "offers code, indices, probs" in r.stderr


@pytest.mark.slow
def test_the_categorical_vae_reconstructs_and_its_codes_know_the_digit(aepipe_pm, store):
    """On held-out digits the one-hot argmax codes reconstruct far better than the mean training
    image (chance), and a logistic regression on the codes names the digit far above 1 in 10.
    We see squared error 0.046 against 0.073, and 0.87 accuracy (nearest neighbours: 0.84)."""
    from sklearn.linear_model import LogisticRegression

    from aepipe.training.metrics import code_tensor

    r = train(
        resolve(aepipe_pm, PIPELINES / "categorical-vae.toml", ["tracking.log_model=false", *QUIET, "train.epochs=60"]),
        aepipe_pm,
    )
    d = r.data
    chance = float((d.x_test - d.x_train.mean(0)).pow(2).mean())
    assert r.metrics["test_mse"] < 0.75 * chance, (r.metrics["test_mse"], chance)
    assert r.metrics["test_penalty.kl"] > 1.0  # the codes carry information: no collapse to the prior
    train_codes, test_codes = code_tensor(r.model, d.x_train).numpy(), code_tensor(r.model, d.x_test).numpy()
    clf = LogisticRegression(max_iter=2000).fit(train_codes, d.y_train.numpy())
    assert clf.score(test_codes, d.y_test.numpy()) > 0.6
