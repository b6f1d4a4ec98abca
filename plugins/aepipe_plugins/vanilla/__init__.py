"""The vanilla autoencoder family: one-layer (the notes' h = g(W1 x + b1), x^ = o(W2 h + b2)),
deep MLP and small convolutional encoders and decoders, and the variants built from them."""

from aepipe.plugin import Variant, hookimpl


@hookimpl
def aepipe_register_encoders(register):
    from aepipe_plugins.vanilla import nets

    for cls in (nets.OneLayerEncoder, nets.MLPEncoder, nets.ConvEncoder):
        register(cls)


@hookimpl
def aepipe_register_decoders(register):
    from aepipe_plugins.vanilla import nets

    for cls in (nets.OneLayerDecoder, nets.MLPDecoder, nets.ConvDecoder):
        register(cls)


ONE_LAYER = {"encoder": {"name": "one-layer", "activation": "sigmoid"}, "decoder": {"name": "one-layer"}}


@hookimpl
def aepipe_register_variants(register):
    register(Variant(
        "vanilla",
        "One-layer sigmoid encoder and decoder, Bernoulli likelihood (the notes' autoencoder).",
        {"model": {**ONE_LAYER, "likelihood": "bernoulli"}},
    ))
    register(Variant(
        "linear",
        "Linear encoder and decoder with squared error: its optimum spans PCA's principal subspace.",
        {"model": {"encoder": {"name": "one-layer", "activation": "identity"}, "decoder": {"name": "one-layer"},
                   "likelihood": "gaussian"}},
    ))
    register(Variant(
        "deep",
        "MLP encoder and decoder (ReLU hidden layers), Bernoulli likelihood.",
        {"model": {"encoder": {"name": "mlp"}, "decoder": {"name": "mlp"}, "likelihood": "bernoulli"}},
    ))
    register(Variant(
        "conv",
        "Small convolutional encoder and decoder for images, Bernoulli likelihood.",
        {"model": {"encoder": {"name": "conv"}, "decoder": {"name": "conv"}, "likelihood": "bernoulli"}},
    ))
