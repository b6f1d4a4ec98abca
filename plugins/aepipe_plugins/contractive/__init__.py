"""Contractive autoencoders: lambda * ||dh/dx||_F^2, by closed form, exact autograd or an
unbiased random-projection estimate; the Jacobian norm is logged on validation data."""

from aepipe.plugin import Variant, hookimpl


@hookimpl
def aepipe_register_regularizers(register):
    from aepipe_plugins.contractive.penalty import Contractive

    register(Contractive)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("contractive", "One-layer sigmoid autoencoder with the contractive penalty (closed form).",
                     {"model": {"encoder": {"name": "one-layer", "activation": "sigmoid"}, "decoder": {"name": "one-layer"},
                                "likelihood": "bernoulli", "regularizers": {"contractive": {"lam": 0.1}}}}))
