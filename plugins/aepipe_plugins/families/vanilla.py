"""The vanilla autoencoder family: one-layer (the notes' h = g(W1 x + b1), x^ = o(W2 h + b2)),
deep MLP and small convolutional encoders and decoders, and the variants built from them."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import ONE_LAYER, autoencoder


@hookimpl
def aepipe_register_encoders(register):
    from aepipe_plugins.networks import basic as nets

    for cls in (nets.OneLayerEncoder, nets.MLPEncoder, nets.ConvEncoder):
        register(cls)


@hookimpl
def aepipe_register_decoders(register):
    from aepipe_plugins.networks import basic as nets

    for cls in (nets.OneLayerDecoder, nets.MLPDecoder, nets.ConvDecoder):
        register(cls)


@hookimpl
def aepipe_register_variants(register):
    register(Variant(
        "vanilla",
        "One-layer sigmoid encoder and decoder, Bernoulli likelihood (the notes' autoencoder).",
        autoencoder(ONE_LAYER),
    ))
    register(Variant(
        "linear",
        "Linear encoder and decoder with squared error: its optimum spans PCA's principal subspace.",
        autoencoder(ONE_LAYER, encoder={"name": "one-layer", "activation": "identity"}, likelihood="gaussian"),
    ))
    register(Variant(
        "deep",
        "MLP encoder and decoder (ReLU hidden layers), Bernoulli likelihood.",
        autoencoder({"encoder": {"name": "mlp"}, "decoder": {"name": "mlp"}}),
    ))
    register(Variant(
        "conv",
        "Small convolutional encoder and decoder for images, Bernoulli likelihood.",
        autoencoder({"encoder": {"name": "conv"}, "decoder": {"name": "conv"}}),
    ))
