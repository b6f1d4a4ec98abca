"""VAE, CVAE and AAE do what their names promise on real data (scikit-learn's digits)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from aepipe.errors import ConfigError
from aepipe.stats import kl_monte_carlo, mmd_rbf
from aepipe_plugins.regularizers.kl import importance_weighted_nll

from helpers import train_file as _train
from conftest import PIPELINES

#: the models here train on one CPU thread (zoo_shared.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_vae_bounds_and_kl(aepipe_pm, store):
    r = _train(aepipe_pm, "vae", "train.epochs=60", "model.samples=2")
    m = r.metrics
    # the importance-weighted bound is at least as tight as the ELBO (we see 23.5 vs 24.1 nats)
    assert m["test_iw_nll"] <= m["test_neg_elbo"]
    assert m["test_iw_nll"] < m["test_neg_elbo"] - 0.1
    # with K = 1 the importance-weighted estimate is the ELBO's estimate
    one = importance_weighted_nll(r.model, r.data.x_test, None, 1)
    assert one == pytest.approx(m["test_neg_elbo"], rel=0.02)
    # the analytic KL used in training agrees with its Monte Carlo estimate on real encodings
    with torch.no_grad():
        q = r.model.encode(r.data.x_test).dist
        z = q.sample((4000,))
        mc = kl_monte_carlo(q.log_prob(z), r.model.prior.log_prob(z.reshape(-1, z.shape[-1])).reshape(z.shape[:2]))
    assert float(mc.mean()) == pytest.approx(m["test_kl"], rel=0.02)
    assert m["test_kl"] > 1.0  # the code is used: no posterior collapse


@pytest.mark.slow
def test_vae_with_a_mixture_prior_uses_the_monte_carlo_kl(aepipe_pm, store):
    r = _train(
        aepipe_pm, "vae", "train.epochs=15", "model.prior.name=mixture", "model.prior.preset=random", "model.samples=4"
    )
    assert np.isfinite(r.metrics["test_neg_elbo"]) and r.metrics["test_iw_nll"] <= r.metrics["test_neg_elbo"]


@pytest.mark.slow
def test_cvae_generates_the_requested_digit(aepipe_pm, store):
    """An independent classifier, trained on real training digits, recognizes the class asked
    for in at least 80% of the samples (averaged over the 10 classes)."""
    from sklearn.linear_model import LogisticRegression

    r = _train(aepipe_pm, "cvae")
    clf = LogisticRegression(max_iter=2000).fit(r.data.x_train.numpy(), r.data.y_train.numpy())
    assert clf.score(r.data.x_test.numpy(), r.data.y_test.numpy()) > 0.9  # a competent judge
    torch.manual_seed(0)
    y = torch.arange(10).repeat_interleave(100)
    with torch.no_grad():
        samples = r.model.sample(len(y), y).numpy()
    per_class = [(clf.predict(samples[y.numpy() == c]) == c).mean() for c in range(10)]
    assert np.mean(per_class) >= 0.8, per_class


def _prior_mmd(result, labels=None) -> float:
    torch.manual_seed(0)
    with torch.no_grad():
        codes = result.model.encode(result.data.x_test).code
        real = result.model.prior.sample(len(codes), labels)
    return float(mmd_rbf(codes, real))


@pytest.mark.slow
def test_aae_codes_match_the_prior(aepipe_pm, store):
    """Aggregated test codes against N(0, I) samples: the AAE's MMD is far below that of the
    same autoencoder trained without the adversary, and of its untrained encoder."""
    aae = _train(aepipe_pm, "aae", "train.epochs=60")
    plain = _train(aepipe_pm, "aae", "train.epochs=60", "model.regularizers.adversarial.enabled=false",
                   "model.prior.name=standard-normal")
    untrained = _train(aepipe_pm, "aae", "train.epochs=1", "train.lr=1e-9", "model.regularizers.adversarial.lr=1e-9")
    ours, theirs, fresh = _prior_mmd(aae), _prior_mmd(plain), _prior_mmd(untrained)
    # we see about 0.06 against 1.6 and 1.9
    assert ours < 0.1 and ours < theirs / 10 and ours < fresh / 10, (ours, theirs, fresh)
    # decoded prior samples look like data: a digit classifier is confident on them
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(aae.data.x_train.numpy(), aae.data.y_train.numpy())
    with torch.no_grad():
        samples = aae.model.sample(500).numpy()
    assert clf.predict_proba(samples).max(1).mean() > 0.6


@pytest.mark.slow
def test_supervised_aae_ties_each_class_to_its_component(aepipe_pm, store):
    r = _train(aepipe_pm, "aae-mixture")
    with torch.no_grad():
        codes = r.model.encode(r.data.x_test).code
    nearest = torch.cdist(codes, r.model.prior.means).argmin(1)
    accuracy = float((nearest == r.data.y_test).float().mean())
    assert accuracy >= 0.8, accuracy


BAD = [
    ("vae", ["model.samples=0"], r"'model\.samples' = 0: expected int: Input should be greater than or equal to 1"),
    ("vae", ["model.regularizers.kl.iw_samples=0"],
     r"'model\.regularizers\.kl\.iw_samples' = 0: .*greater than or equal to 1"),
    ("vae", ["model.prior.name=swiss-roll"],
     r"regularizer 'kl' needs the prior's log density; prior 'swiss-roll' has none"),
    ("vae", ["model.prior.name=mixture", "model.regularizers.kl.method=analytic"],
     r"kl: method 'analytic' has no closed form for prior 'mixture'"),
    ("vae", ["model.bottleneck.name=deterministic"],
     r"regularizer 'kl' needs a stochastic code: set \[model\.bottleneck\] name = \"gaussian\""),
    ("vae", ["model.encoder.distribution=gaussian"],
     r"model\.bottleneck \(bottleneck 'gaussian'\): encoder 'mlp' gives a posterior of its own"),
    ("aae-mixture", ["model.prior.class_conditional=false"], r"supervised = true needs a class-conditional prior"),
]


@pytest.mark.parametrize("pipeline,overrides,pattern", BAD)
def test_bad_settings(aepipe_pm, store, pipeline, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern) as exc:
        _train(aepipe_pm, pipeline, *overrides)
    assert "\n" not in str(exc.value)


def test_conditional_model_needs_labels(aepipe_pm, store, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((60, 64)))
    with pytest.raises(ConfigError, match=r"model\.conditional = true needs a labelled dataset; 'file' has no labels"):
        _train(aepipe_pm, "cvae", "data.name=file", f"data.path='{tmp_path / 'x.npy'}'")


def test_sample_command(store, tmp_path):
    from click.testing import CliRunner

    from aepipe.cli import cli

    run = CliRunner()
    out = run.invoke(
        cli,
        ["train", str(PIPELINES / "cvae.toml"), "-q", "--set", "train.epochs=3", "--set", "tracking.log_images=false"],
    )
    assert out.exit_code == 0, out.output
    run_id = out.stdout.strip().splitlines()[-1]
    res = run.invoke(cli,
                     ["sample", run_id, "-n", "12", "--label", "3", "-o", str(tmp_path / "s.npy"), "--grid",
                      str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (12, 1, 8, 8) and s.min() >= 0 and s.max() <= 16
    assert (tmp_path / "s.png").stat().st_size > 1000
    bad = run.invoke(cli, ["sample", run_id, "--label", "11", "-o", str(tmp_path / "b.npy")])
    assert bad.exit_code == 2 and "--label 11: no such class; run" in bad.stderr and "classes 0..9" in bad.stderr
    # the cvae's encode needs labels
    np.save(tmp_path / "in.npy", np.zeros((2, 64)))
    enc = run.invoke(cli, ["encode", run_id, str(tmp_path / "in.npy"), "-o", str(tmp_path / "c.npy")])
    assert enc.exit_code == 2 and "is conditional: give --labels" in enc.stderr
    np.save(tmp_path / "y.npy", np.array([1, 2]))
    enc = run.invoke(cli,
                     ["encode", run_id, str(tmp_path / "in.npy"), "--labels", str(tmp_path / "y.npy"), "-o",
                      str(tmp_path / "c.npy")])
    assert enc.exit_code == 0 and np.load(tmp_path / "c.npy").shape == (2, 8)
    # its pyfunc model carries an input example with the class as a param, and encodes by it
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/pyfunc")
    assert model.metadata.saved_input_example_info["params"]
    assert np.allclose(
        model.predict(np.zeros((2, 64)), params={"label": 1}), np.load(tmp_path / "c.npy")[:1], atol=1e-5
    )
