"""JointVAE (Dupont 2018, "Learning Disentangled Joint Continuous and Discrete
Representations"): the ``jointvae`` bottleneck (Gaussian latents beside Gumbel-softmax
categorical ones, each part's KL held at a capacity that rises over training), the
``jointvae-prior`` (N(0, I) beside uniform categories) and the ``jointvae`` variant (the MLP
autoencoder, 10 continuous latents and one 10-way discrete latent, as the paper's MNIST model)."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import autoencoder


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks.jointvae import JointBottleneck

    register(JointBottleneck)


@hookimpl
def aepipe_register_priors(register):
    from aepipe_plugins.bottlenecks.jointvae import JointPrior

    register(JointPrior)


JOINTVAE = autoencoder(bottleneck={"name": "jointvae", "categories": 10, "discrete": 1},
                       prior={"name": "jointvae-prior"}, code_dim=20)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("jointvae", "JointVAE: 10 Gaussian latents beside a 10-way Gumbel-softmax latent, each part's "
                                 "KL held at a capacity rising over training; N(0, I) beside uniform categories as "
                                 "the prior.", JOINTVAE))
