"""The evaluation cache is keyed by the state of what it measures (issue 30, part 5): a sampler
that ``fit-sampler`` fits again is measured again (it returned the old fit's figures), while an
unchanged model and sampler still read the cache."""

from __future__ import annotations

import pytest

from conftest import store_at, use_store, QUIET_KEEP_MODEL

QUIET = QUIET_KEEP_MODEL


@pytest.fixture(scope="module")
def run(shared_store):
    """A plain autoencoder on the digits, one epoch, in the shared store, with a 2-component GMM
    fitted by ``fit-sampler``."""
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.runs import fit_run_sampler
    from aepipe.training import train

    pm = get_plugin_manager()
    home = shared_store
    with store_at(home):
        result = train(resolve(pm, tree={"variant": "vanilla"}, overrides=[*QUIET, "train.epochs=1"]), pm)
        fit_run_sampler(result.run_id, "gmm", ("components=2",))
    return {"home": home, "run_id": result.run_id, "pm": pm}


@pytest.mark.slow
def test_a_refitted_sampler_is_measured_again_and_an_unchanged_one_is_read_back(run, monkeypatch):
    from aepipe.evaluation import run as module
    from aepipe.evaluation.run import evaluate, settings, state_digests
    from aepipe.runs import fit_run_sampler
    from aepipe.tracking import default_tracker

    use_store(monkeypatch, run["home"])
    run_id = run["run_id"]
    s = settings(metrics=["fid"], samplers=["gmm"], samples=60)
    (first,) = evaluate([run_id], s)
    (again,) = evaluate([run_id], s)
    assert not first.cached and again.cached and again.metrics == first.metrics
    before = state_digests(run_id, ["gmm"], default_tracker())

    fit_run_sampler(run_id, "gmm", ("components=6", "covariance=diag"))  # the same name, another fit
    after = state_digests(run_id, ["gmm"], default_tracker())
    assert after["model"] == before["model"] and after["sampler gmm"] != before["sampler gmm"]
    (refit,) = evaluate([run_id], s)
    assert not refit.cached
    own = [k for k in first.metrics if not k.endswith(".gmm")]
    gmm = [k for k in first.metrics if k.endswith(".gmm")]
    assert own and gmm, first.metrics
    assert all(refit.metrics[k] == first.metrics[k] for k in own)  # the model's own sampler: the same draws
    assert all(refit.metrics[k] != first.metrics[k] for k in gmm), (first.metrics, refit.metrics)

    def boom(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr(module, "compute", boom)
    (cached,) = evaluate([run_id], s)  # nothing changed since: read back
    assert cached.cached and cached.metrics == refit.metrics
    with pytest.raises(AssertionError, match="computed again"):  # without the sampler: another entry
        evaluate([run_id], settings(metrics=["fid"], samplers=["prior"], samples=60))


def test_evaluate_samples_are_checked_against_the_budget_before_any_is_drawn(run, monkeypatch):
    """``--samples`` that would not fit what this process may allocate: one line naming the option,
    before the model draws (issue 30, part 4)."""
    from aepipe import limits
    from aepipe.errors import ConfigError
    from aepipe.evaluation.run import evaluate, settings
    from aepipe.model import AutoEncoder

    use_store(monkeypatch, run["home"])
    drawn = []
    monkeypatch.setattr(AutoEncoder, "sample", lambda self, *a, **k: drawn.append(a))
    monkeypatch.setattr(
        limits, "memory_budget", lambda device="cpu", cgroup_root=None: limits.Budget(10_000_000, "a test")
    )
    # (2 samplers + a clamped copy) x 20,000 images x 64 values x 4 bytes, and the test split
    with pytest.raises(
        ConfigError,
        match=r"^--samples 20000: 20,000 generated images through each of 2 samplers needs about 0\.0155 GB; "
        r"0\.01 GB is free on cpu \(a test\): ask for fewer",
    ):
        evaluate([run["run_id"]], settings(metrics=["fid"], samplers=["gmm"], samples=20_000, seed=7))
    assert not drawn


def test_a_feature_spaces_version_keys_only_the_evaluations_that_use_it(run, monkeypatch):
    """Each feature space's ``version`` class attribute is part of the key of the evaluations that
    use it: bumping one space's recomputes those, while entries of other spaces (and of groups that
    use no space) are still read back."""
    from aepipe.evaluation import run as module
    from aepipe.evaluation.run import evaluate, settings
    from aepipe_plugins.features.domain import DomainFeatures
    from aepipe_plugins.features.inception import InceptionFeatures

    use_store(monkeypatch, run["home"])
    run_id = run["run_id"]
    fid = settings(metrics=["fid"], samples=40, seed=5)
    mse = settings(metrics=["reconstruction"], seed=5)
    for s in (fid, mse):
        evaluate([run_id], s)

    def boom(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr(module, "compute", boom)
    # a space this evaluation does not use
    monkeypatch.setattr(InceptionFeatures, "version", InceptionFeatures.version + 1)
    assert all(r.cached for s in (fid, mse) for r in evaluate([run_id], s))
    monkeypatch.setattr(DomainFeatures, "version", DomainFeatures.version + 1)  # the space it uses
    assert evaluate([run_id], mse)[0].cached  # no feature space in it
    with pytest.raises(AssertionError, match="computed again"):
        evaluate([run_id], fid)
