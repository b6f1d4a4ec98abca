"""The claims of issue 33's quantized, joint and two-stage models, on the digits' held-out split
(figures in docs/variants.md, "FSQ, residual VQ, JointVAE and the two-stage sampler"): FSQ uses
a larger share of its codebook than VQ of the same size; residual VQ's reconstruction error falls
with each stage; JointVAE's discrete code predicts the digit; two-stage samples are closer to the
data than the same VAE's prior samples in the ``domain`` feature space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aepipe.config import resolve
from aepipe.tracking.memory import MemoryTracker
from aepipe.training import train
from aepipe.training.metrics import code_tensor

from aepipe_plugins.families.presets import MLP
from conftest import PIPELINES, QUIET

#: the models here train on one CPU thread (zoo_shared.one_torch_thread)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

#: VQ and FSQ of the same size: 4 positions of 64 choices each (FSQ's grid 4 x 4 x 4), a 12-wide code
SAME_SIZE = {"fsq": {"name": "fsq", "levels": [4, 4, 4], "groups": 4},
             "quantized": {"name": "quantized", "codebook_size": 64, "groups": 4}}


def _train(pm, folder, tree=None, path=None, *overrides):
    torch.manual_seed(0)
    return train(resolve(pm, path, [*QUIET, *overrides], tree=tree), pm, tracker=MemoryTracker(folder))


#: the budgets of the claims: the digits, batches of 64, no early stopping
DIGITS = ["data.name=digits", "train.batch_size=64", "train.patience=0", "model.sampler.steps=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(name)``: the run of model ``name``, trained once for the module on first use."""
    from aepipe.plugins import get_plugin_manager

    pm = get_plugin_manager()
    folder = tmp_path_factory.mktemp("quantized")
    done = {}

    def run(name):
        if name not in done:
            if name in SAME_SIZE:  # the same MLP networks (FSQ's codes leave their first corners slowly on conv ones)
                tree = {"variant": "fsq-vae", "model": {**MLP, "code_dim": 12, "bottleneck": SAME_SIZE[name]}}
                done[name] = _train(pm, folder, tree, None, *DIGITS, "train.epochs=40", "train.lr=1e-3")
            elif name == "rvq":
                done[name] = _train(pm, folder, None, PIPELINES / "rvq-vae.toml", *DIGITS, "train.epochs=15")
            else:
                done[name] = _train(pm, folder, None, PIPELINES / "jointvae.toml", "train.epochs=60",
                                    "model.bottleneck.capacity_steps=1000")
        return done[name]

    return run


def test_fsq_uses_a_larger_share_of_its_codebook_than_vq_of_the_same_size(runs):
    used = {name: runs(name).metrics["test_codebook_used"] / 64 for name in SAME_SIZE}
    perplexity = {name: runs(name).metrics["test_codebook_perplexity"] for name in SAME_SIZE}
    print("share used", used, "perplexity", perplexity)
    # we see 56 of 64 (FSQ) against 48 of 64 (VQ); the perplexity does not follow (25.8 against 27.4)
    assert used["fsq"] > used["quantized"], (used, perplexity)


def test_residual_vq_reconstructs_better_with_each_stage(runs):
    m = runs("rvq").metrics
    stages = [m[f"test_stage_{s}_nll"] for s in range(1, 5)]
    print("nll after each stage", stages)  # we see 21.75, 19.78, 18.98, 18.62
    assert all(later < earlier for earlier, later in zip(stages, stages[1:])), stages
    assert stages[-1] == pytest.approx(m["test_recon"], rel=1e-4)  # all stages: the model's own reconstruction


@pytest.mark.xfail(strict=True,
                   reason="does not hold at this budget (docs/variants.md): every digit falls into one category")
def test_jointvae_discrete_code_predicts_the_digit(runs):
    """Each category is read as the digit most of the training codes in it carry; on the test
    split that reading beats chance (0.1) by at least 0.15. At 60 epochs on the digits it does
    not: the discrete KL reaches its capacity, log 10, through one confident category for every
    input (accuracy 0.089); strict, so that a fix shows as an unexpected pass."""
    r = runs("jointvae")
    model = r.model.eval()
    train_c = code_tensor(model, r.data.train, what="indices")[:, 0].numpy()
    test_c = code_tensor(model, r.data.test, what="indices")[:, 0].numpy()
    y_train, y_test = r.data.train.y.numpy(), r.data.test.y.numpy()
    digit = {c: np.bincount(y_train[train_c == c], minlength=10).argmax() for c in np.unique(train_c)}
    accuracy = float(np.mean([digit.get(c, -1) == y for c, y in zip(test_c, y_test)]))
    print("accuracy", accuracy, "categories used", len(np.unique(test_c)), "kl", r.metrics.get("test_kl_discrete"))
    assert accuracy >= 0.25, accuracy


@pytest.mark.xfail(strict=True,
                   reason="does not hold at this budget (docs/variants.md): FID 3.70 against the prior's 3.63")
def test_two_stage_samples_are_closer_to_the_data_than_prior_samples(digits_vae):
    """The digits VAE (shared, 30 epochs): FID of 2,000 decoded draws against the test split in
    the ``domain`` feature space, drawn through its prior and through a two-stage sampler fitted
    on its training codes. It does not hold here: this VAE's codes are already close to N(0, I)
    (a Bernoulli decoder keeps its posteriors wide), which leaves the second stage nothing to
    correct; strict, so that a model where it holds shows as an unexpected pass."""
    from aepipe.evaluation.generation import feature_space, generation_metrics
    from aepipe.plugins import get_plugin_manager
    from aepipe.sampling import build_sampler
    from aepipe.training.metrics import fit_on_codes

    pm = get_plugin_manager()
    model, data = digits_vae.model.eval(), digits_vae.data
    torch.manual_seed(0)
    sampler = build_sampler(model, "two-stage", pm=pm)
    fit_on_codes(model, sampler, data.train)
    space = feature_space("domain", data, torch.device("cpu"), pm)
    real = space.features(data.x_test)
    fid = {}
    for name, drawn_by in (("prior", None), ("two-stage", sampler)):
        torch.manual_seed(0)
        with torch.no_grad():
            fid[name] = generation_metrics(real, space.features(model.sample(2000, None, drawn_by)))["fid"]
    print("fid", fid)
    assert fid["two-stage"] < fid["prior"], fid
