"""Sparse autoencoders on a transformer's activations (dictionary learning for
interpretability): the ``activations`` dataset (needs ``aepipe[activations]``), the linear
``sae-encoder`` and unit-norm ``sae-decoder``, the sparse codes (``relu-code``, ``topk-code``,
``batchtopk-code``, ``jumprelu-code``, ``gated-code``), the ``decoder-weighted-l1``, ``auxk``,
``gated-penalty`` and ``matryoshka`` penalties, and the variants ``relu-sae``, ``topk-sae``,
``batchtopk-sae``, ``jumprelu-sae``, ``gated-sae`` and ``matryoshka-sae``.

When a fresh run starts, parts with ``initialise_from_data(model, split)`` (the decoder's
pre-encoder bias: the geometric median of a training sample) are initialised from the training
split; a resumed run keeps its weights."""

from aepipe.plugin import Variant, hookimpl


@hookimpl
def aepipe_register_datasets(register):
    from aepipe_plugins.datasets.activations import Activations

    register(Activations)


@hookimpl
def aepipe_register_encoders(register):
    from aepipe_plugins.networks.sae import SaeEncoder

    register(SaeEncoder)


@hookimpl
def aepipe_register_decoders(register):
    from aepipe_plugins.networks.sae import SaeDecoder

    register(SaeDecoder)


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks import sae

    for cls in (sae.ReluCode, sae.TopKCode, sae.BatchTopKCode, sae.JumpReluCode, sae.GatedCode):
        register(cls)


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.regularizers import sae

    for cls in (sae.DecoderWeightedL1, sae.AuxK, sae.GatedPenalty, sae.Matryoshka):
        register(cls)


#: the presets' dictionary size: 4 x the width of all-MiniLM-L6-v2's residual stream (384)
WIDTH = 1536


def dictionary(bottleneck: dict, decoder: dict | None = None, regularizers: dict | None = None) -> dict:
    """A sparse autoencoder: the linear encoder, ``bottleneck``, the dictionary decoder and a
    squared-error reconstruction (``sigma`` 1/sqrt(2): the loss is ||x - x^||^2 per token)."""
    model = {"code_dim": WIDTH, "encoder": {"name": "sae-encoder"}, "bottleneck": bottleneck,
             "decoder": {"name": "sae-decoder", **(decoder or {})}, "likelihood": "gaussian", "sigma": 0.5 ** 0.5}
    if regularizers:
        model["regularizers"] = regularizers
    return {"model": model}


@hookimpl
def aepipe_register_variants(register):
    register(Variant("relu-sae", "ReLU sparse autoencoder: an L1 penalty on the code, weighted by the atoms' norms "
                                 "(free-norm atoms).",
                     dictionary({"name": "relu-code"}, {"unit_norm": False}, {"decoder-weighted-l1": {"lam": 0.1}})))
    register(Variant("topk-sae",
                     "TopK sparse autoencoder (Gao et al. 2024): k latents per token, AuxK for dead latents.",
                     dictionary({"name": "topk-code", "k": 32}, regularizers={"auxk": {"alpha": 1 / 32}})))
    register(Variant("batchtopk-sae", "BatchTopK sparse autoencoder (Bussmann et al. 2024): n k latents per batch of n "
                                      "tokens, one threshold at inference.",
                     dictionary({"name": "batchtopk-code", "k": 32}, regularizers={"auxk": {"alpha": 1 / 32}})))
    register(Variant("jumprelu-sae", "JumpReLU sparse autoencoder (Rajamanoharan et al. 2024): learned thresholds "
                                     "(straight-through estimator), an L0 penalty.",
                     dictionary({"name": "jumprelu-code", "l0": 1.0, "target_l0": 32.0})))
    register(Variant("gated-sae", "Gated sparse autoencoder (Rajamanoharan et al. 2024): a gate decides which latents "
                                  "fire, rescaled shared weights their magnitudes.",
                     dictionary({"name": "gated-code"}, regularizers={"gated-penalty": {"lam": 0.1}})))
    register(Variant("matryoshka-sae", "Matryoshka sparse autoencoder (Bussmann et al. 2025): nested prefixes of the "
                                       "dictionary each reconstruct the input (BatchTopK code).",
                     dictionary({"name": "batchtopk-code", "k": 32},
                                regularizers={"matryoshka": {"prefixes": [WIDTH // 16, WIDTH // 8, WIDTH // 4,
                                                                          WIDTH // 2]},
                                              "auxk": {"alpha": 1 / 32}})))


@hookimpl
def aepipe_run_start(run):
    """Data-dependent initialisation of a fresh run's parts (kept small: a documented
    fresh-initialisation hook of aepipe would replace it)."""
    if run.state.epoch:
        return
    for part in (run.model.encoder, run.model.bottleneck, run.model.decoder):
        initialise = getattr(part, "initialise_from_data", None)
        if initialise is not None:
            initialise(run.model, run.data.train)


@hookimpl
def aepipe_run_end(run, metrics):
    """A dictionary's latent-density histogram (``latent_density.png``) and, on the
    ``activations`` dataset, its downstream fidelity (``test_embedding_cosine_recovered``...)."""
    if not hasattr(run.model.bottleneck, "dead"):
        return None
    from aepipe_plugins.bottlenecks.sae import density_figure, firing_rates

    run.log_figure(density_figure(firing_rates(run.model, run.data.test), f"{getattr(run.config, 'variant', '')}:"),
                   "latent_density.png")
    dataset = run.config.dataset
    if dataset.name != "activations" or not dataset.config.fidelity_windows:
        return None
    from aepipe_plugins.datasets.activations import Activations
    from aepipe_plugins.datasets.fidelity import embedding_fidelity

    return embedding_fidelity(run.model, Activations(dataset.config), run.data.value_range,
                              dataset.config.fidelity_windows)
