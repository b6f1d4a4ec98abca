"""The vector-quantized autoencoder (issue 18): the ``quantized`` bottleneck (codebook,
straight-through, EMA updates after each optimizer step, restarts of dead codewords, its own
learning rate), the ``index-ar`` sampler over codeword indices, and the ``vq-vae`` variant on
real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aepipe.config import resolve
from aepipe.errors import ConfigError
from aepipe.model import build_model
from aepipe.testing import check_component
from aepipe.tracking.memory import MemoryTracker
from aepipe.training import Interrupted, load_data, make_optimizer, train
from aepipe_plugins.bottlenecks.quantize import EPS, Quantized

from helpers import built
from conftest import PIPELINES, QUIET
from helpers import sigint_at_epoch_end

#: the models here train on one CPU thread (zoo_shared.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _model(pm, bottleneck: dict, code_dim: int = 8, **model):
    tree = {"data": {"name": "digits"}, "model": {
        "code_dim": code_dim, "encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]},
        "bottleneck": {"name": "quantized", **bottleneck}, **model}}
    _, model, data = built(pm, tree=tree, seed=0, seed_before_data=True)
    return model, data


def _train_step(model, optimizer, x, y):
    loss, _, step = model.step(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return step


def _after_step(model):
    with torch.no_grad():
        for part in model.after_step_parts():
            part.after_step()


# --- the bottleneck -------------------------------------------------------------------------------


def test_ema_codebook_moves_after_the_optimizer_step_as_the_moving_averages_say(aepipe_pm):
    model, data = _model(aepipe_pm, {"codebook_size": 16, "groups": 2, "ema": True, "decay": 0.9})
    q = model.bottleneck
    assert model.after_step_parts() == [q]
    optimizer = make_optimizer(model.parameter_groups(), "adam", 1e-3, 0.0)
    x, y = data.train.head(64)
    model.train()
    model.step(x, y)  # the first training batch initializes the codebook from its encoder outputs
    assert bool(q.initialized)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    step = _train_step(model, optimizer, x, y)
    for key in ("codebook", "cluster_size", "embed_sum"):  # forward, backward and the optimizer leave them alone
        assert torch.equal(q.state_dict()[key], before[key]), key
    _after_step(model)
    flat = step.features.code.detach().reshape(-1, 4)  # the encoder outputs of that step, 2 groups of width 4
    index = step.encoding.outputs["indices"].reshape(-1)
    size = 0.9 * before["cluster_size"] + 0.1 * torch.bincount(index, minlength=16).float()
    sums = 0.9 * before["embed_sum"] + 0.1 * torch.zeros(16, 4).index_add_(0, index, flat)
    total = size.sum()
    assert torch.allclose(q.cluster_size, size) and torch.allclose(q.embed_sum, sums)
    assert torch.allclose(q.codebook, sums / ((size + EPS) / (total + 16 * EPS) * total)[:, None], atol=1e-6)
    assert not torch.equal(q.codebook, before["codebook"])
    assert "penalty.codebook" not in model.step(x, y)[1]  # moving averages: no codebook loss


def test_the_codebook_trains_at_its_own_learning_rate(aepipe_pm):
    model, _ = _model(aepipe_pm, {"codebook_lr": 0.05})
    optimizer = make_optimizer(model.parameter_groups(), "adam", 1e-3, 0.0)  # as the training loop builds it
    codebook = model.bottleneck.codebook
    own = [g for g in optimizer.param_groups if any(p is codebook for p in g["params"])]
    assert len(own) == 1 and own[0]["lr"] == 0.05 and len(own[0]["params"]) == 1
    rest = [g for g in optimizer.param_groups if g is not own[0]]
    assert rest and all(g["lr"] == 1e-3 for g in rest)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(model.model_parameters())
    plain, _ = _model(aepipe_pm, {})
    assert len(make_optimizer(plain.parameter_groups(), "adam", 1e-3, 0.0).param_groups) == 1


@pytest.mark.parametrize("ema", [False, True])
def test_a_codeword_never_chosen_restarts_at_a_recent_encoder_output(aepipe_pm, ema):
    def run(dead_after):
        model, data = _model(aepipe_pm, {"codebook_size": 8, "dead_after": dead_after, "ema": ema})
        q = model.bottleneck
        optimizer = make_optimizer(model.parameter_groups(), "adam", 1e-3, 0.0)
        x, y = data.train.head(64)
        model.train()
        model.step(x, y)  # initializes the codebook
        with torch.no_grad():
            q.codebook[0] = 100.0  # far from every encoder output: never chosen
            if ema:
                q.embed_sum[0] = 100.0
        seen = []
        for _ in range(2):
            step = _train_step(model, optimizer, x, y)
            _after_step(model)
            seen.append(q.codebook[0].clone())
        return q, step.features.code.detach().reshape(-1, 8), seen

    q, latest, seen = run(dead_after=2)
    assert (seen[0] > 50).all()  # idle for one step: kept
    assert (latest - seen[1]).abs().sum(1).min() < 1e-5  # idle for two: now one of the latest encoder outputs
    assert 0 in q.nearest(latest).tolist() and int(q.idle_steps[0]) == 0
    if ema:
        assert float(q.cluster_size[0]) == 1.0 and torch.allclose(q.embed_sum[0], q.codebook[0])
    _, _, kept = run(dead_after=0)
    assert (kept[1] > 50).all()


def test_bad_settings_are_one_line(aepipe_pm):
    cases = [({"groups": 3},
              r"model\.bottleneck \(bottleneck 'quantized'\): model\.code_dim = 8 is not divisible by groups = 3"),
             ({"ema": True, "codebook_lr": 0.01}, r"codebook_lr has no effect with ema = true"),
             ({"codebook_size": 1}, r"codebook_size")]
    for settings, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as exc:
            _model(aepipe_pm, settings)
        assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"encoder 'mlp' gives a posterior of its own"):
        _model(aepipe_pm, {}, encoder={"name": "mlp", "hidden": [32], "distribution": "gaussian"})


def test_conv_encoder_and_quantized_bottleneck_compose_on_colour_images(aepipe_pm, tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:12, 0:12]
    images = []
    for _ in range(60):  # a coloured square on a dark ground
        top, left, colour = rng.integers(0, 7), rng.integers(0, 7), rng.integers(60, 256, 3)
        image = np.full((3, 12, 12), 20, dtype=np.uint8)
        image[:, top:top + 5, left:left + 5] = colour[:, None, None]
        images.append(image)
    np.savez(tmp_path / "squares.npz", x=np.array(images))
    table = {"name": "file", "path": str(tmp_path / "squares.npz"), "image_shape": [3, 12, 12], "value_range": [0, 255]}
    assert Quantized.conformance["model"]["encoder"]["name"] == "conv"  # what the suite builds around it
    check_component("bottleneck", "quantized", aepipe_pm, data=table)
    check_component("variant", "vq-vae", aepipe_pm, data=table)


# --- the sampler over indices -------------------------------------------------------------------


def test_with_one_group_the_sampler_is_the_empirical_distribution_of_codewords(aepipe_pm):
    model, data = _model(
        aepipe_pm, {"codebook_size": 8, "groups": 1}, sampler={"name": "index-ar", "hidden": 16, "steps": 20}
    )
    from aepipe.training.metrics import code_tensor, fit_on_codes

    fit_on_codes(model, model.sampler, data.train)
    counts = torch.bincount(code_tensor(model, data.train, what="indices").reshape(-1), minlength=8).float()
    with torch.no_grad():
        p = torch.softmax(model.sampler.logits(torch.zeros(1, 1, dtype=torch.long))[0, 0], -1)
    assert torch.allclose(p, counts / counts.sum(), atol=1e-4)
    torch.manual_seed(0)
    z = model.sampler.sample(5)
    rows = (z[:, None, :] == model.bottleneck.codebook[None]).all(-1)
    assert rows.any(1).all()  # every draw is a codeword


def test_each_position_sees_only_the_positions_before_it(aepipe_pm):
    model, _ = _model(aepipe_pm, {"codebook_size": 5, "groups": 4}, sampler={"name": "index-ar", "hidden": 16})
    sampler = model.sampler
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in (sampler.inner, sampler.outer, sampler.direct):
            layer.weight.normal_()  # the masks, not small weights, must keep the future out
        a = torch.randint(5, (64, 4))
        logits = sampler.logits(a)
        for g in range(4):
            b = a.clone()
            b[:, g:] = torch.randint(5, (64, 4 - g))  # change position g and after
            assert torch.equal(sampler.logits(b)[:, g], logits[:, g]), g
            if g:
                c = a.clone()
                c[:, g - 1] = (c[:, g - 1] + 1) % 5  # the position just before does matter
                assert not torch.allclose(sampler.logits(c)[:, g], logits[:, g]), g


def test_the_index_sampler_refuses_a_continuous_code(aepipe_pm):
    with pytest.raises(
        ConfigError,
        match=r"model\.sampler \(sampler 'index-ar'\): needs a discrete code .*bottleneck 'gaussian' "
        r"gives continuous codes",
    ) as exc:
        build_model(resolve(aepipe_pm,
                            tree={"variant": "vae", "data": {"name": "digits"},
                                  "model": {"sampler": {"name": "index-ar"}}}),
                    load_data(resolve(aepipe_pm, tree={"variant": "vae", "data": {"name": "digits"}}),
                              torch.device("cpu")))
    assert "\n" not in str(exc.value)


# --- runs -------------------------------------------------------------------------------------


def test_ema_state_survives_a_resume(tmp_path):
    """Ctrl-C after epoch 1, then --resume: the same codebook, moving averages, idle counts and
    sampler as the run that was never stopped (a state outside the buffers would differ)."""
    from aepipe.plugins import get_plugin_manager

    overrides = [*QUIET, "train.epochs=3", "train.patience=0", "model.bottleneck.dead_after=3",
                 "model.sampler.steps=30",
                 "model.encoder.channels=[8]", "model.decoder.channels=[8]", "train.checkpoint_seconds=0"]
    tree = {"variant": "vq-vae", "data": {"name": "digits"}}
    plain = get_plugin_manager()
    full = train(resolve(plain, tree=tree, overrides=overrides), plain, tracker=MemoryTracker(tmp_path / "full"))
    pm = get_plugin_manager()
    pm.register_plugin(sigint_at_epoch_end(1), name="sigint")
    tracker = MemoryTracker(tmp_path / "cut")
    with pytest.raises(Interrupted) as exc:
        train(resolve(pm, tree=tree, overrides=overrides), pm, tracker=tracker)
    resumed = train(None, plain, resume=str(exc.value).rsplit(" ", 1)[1], tracker=tracker)
    ours, theirs = resumed.model.state_dict(), full.model.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert not torch.equal(ours["bottleneck.cluster_size"], torch.ones(32))  # the averages did move


def test_encode_indices_and_sample_through_the_cli(store, tmp_path):
    from click.testing import CliRunner
    from sklearn.datasets import load_digits

    from aepipe.runs import load_model as load_run_model
    from aepipe.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli,
                        ["train", str(PIPELINES / "vq-vae.toml"), "-q", "--set", "train.epochs=2", "--set",
                         "tracking.log_images=false",
                              "--set", "model.sampler.steps=30", "--set", "tracking.log_dataset=false"])
    assert out.exit_code == 0, out.output
    run_id = out.stdout.strip().splitlines()[-1]
    np.save(tmp_path / "x.npy", load_digits().data[:30])  # raw units, 0..16
    res = runner.invoke(
        cli, ["encode", run_id, str(tmp_path / "x.npy"), "--what", "indices", "-o", str(tmp_path / "i.npy")]
    )
    assert res.exit_code == 0, res.output
    indices = np.load(tmp_path / "i.npy")
    assert indices.dtype.kind == "i" and indices.shape == (30, 4) and indices.min() >= 0 and indices.max() < 32
    res = runner.invoke(cli, ["encode", run_id, str(tmp_path / "x.npy"), "-o", str(tmp_path / "c.npy")])
    assert res.exit_code == 0, res.output
    model = load_run_model(run_id)
    with torch.no_grad():  # the code is the codewords of the indices
        assert np.allclose(model.bottleneck.from_indices(torch.as_tensor(indices)).numpy(), np.load(tmp_path / "c.npy"))
    res = runner.invoke(cli, ["sample", run_id, "--sampler", "index-ar", "-n", "8", "-o", str(tmp_path / "s.npy")])
    assert res.exit_code == 0, res.output
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (8, 1, 8, 8) and s.min() >= 0 and s.max() <= 16


# --- the claim on held-out digits ---------------------------------------------------------------


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    from aepipe.plugins import get_plugin_manager

    pm = get_plugin_manager()
    tracker = MemoryTracker(tmp_path_factory.mktemp("vq"))
    result = train(resolve(pm, PIPELINES / "vq-vae.toml", [*QUIET, "train.epochs=20"]), pm, tracker=tracker)
    return result, tracker.runs[result.run_id].metrics


def _nearest_distance(samples: torch.Tensor, data: torch.Tensor) -> float:
    """Mean Euclidean distance from each sample to its nearest image of ``data``."""
    return float(torch.cdist(samples, data).min(1).values.mean())


@pytest.mark.slow
def test_vq_vae_reconstructs_uses_its_codebook_and_samples_like_digits(vq_run):
    result, logged = vq_run
    m, x_test = result.metrics, result.data.x_test
    mean_mse = float((x_test - result.data.x_train.mean(0)).pow(2).mean())
    # we see test MSE 0.020 against 0.073 for the training mean
    assert m["test_mse"] < 0.4 * mean_mse, (m["test_mse"], mean_mse)
    # we see all 32 codewords used, perplexity 30.1
    used = logged["val_codebook_used"][-1][1]
    assert used >= 0.75 * 32 and m["test_codebook_perplexity"] > 16, (used, m["test_codebook_perplexity"])
    # the autoregressive prior fits the training indices far better than independent positions (we see 7.3 vs 12.8 nats;
    # uniform: 13.9)
    assert m["sampler.index_nll"] < m["sampler.independent_nll"] - 2.0
    model = result.model
    torch.manual_seed(0)
    with torch.no_grad():
        ours = model.sample(500)
        random = model.decode(model.bottleneck.from_indices(torch.randint(32, (500, 4))))
    near_ours, near_random = _nearest_distance(ours, x_test), _nearest_distance(random, x_test)
    # we see 1.13 against 1.55 (reconstructions of the test images: 1.04; a test image's nearest other test image: 1.26)
    assert near_ours < 0.9 * near_random, (near_ours, near_random)


@pytest.mark.slow
@pytest.mark.parametrize("ema", ["true", "false"])
def test_two_processes_keep_one_codebook(tmp_path, ema):
    """On two processes (DistributedDataParallel on gloo) the codebook's start, its moving
    averages (of both shards' encoder outputs) and its restarts are the same on every process,
    so both end with the same model, bit for bit."""
    import json
    import subprocess
    import sys

    from test_distributed import RANK_SCRIPT, _env

    script, path = tmp_path / "rank.py", tmp_path / "vq.toml"
    script.write_text(RANK_SCRIPT)
    path.write_text('variant = "vq-vae"\n[data]\nname = "digits"\n[model.encoder]\nchannels = '
                    f'[8]\n[model.decoder]\nchannels = [8]\n[model.bottleneck]\nema = {ema}\ndead_after = '
                    '2\n[model.sampler]\nsteps = 5\n')
    proc = subprocess.run([sys.executable, "-m", "aepipe.training.launch", "--standalone", "--nproc-per-node=2",
                           str(script), str(path), str(tmp_path), "true"],
                          capture_output=True, text=True, env={**_env(tmp_path / "mlruns"), "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"]
