"""Discrete codes: the ``categorical`` bottleneck (Gumbel-softmax relaxation with an annealed
temperature, Jang et al. 2017; Maddison et al. 2017), the ``categorical-uniform`` prior over the
codes of a discrete bottleneck, and the ``categorical-vae`` variant that composes them."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import autoencoder


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks.gumbel import CategoricalBottleneck

    register(CategoricalBottleneck)


@hookimpl
def aepipe_register_priors(register):
    from aepipe_plugins.bottlenecks.gumbel import UniformCategorical

    register(UniformCategorical)


@hookimpl
def aepipe_register_variants(register):
    register(Variant(
        "categorical-vae",
        "Gumbel-softmax VAE: code_dim / categories categorical latents, uniform prior, KL in the loss, annealed "
        "temperature.",
        autoencoder(bottleneck={"name": "categorical", "categories": 10}, prior={"name": "categorical-uniform"},
                    code_dim=200),
    ))
