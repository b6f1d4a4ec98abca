"""Normalizing flows: the ``planar`` and ``iaf`` bottlenecks (a Gaussian posterior followed by
K invertible steps whose log-determinants enter the KL), the ``vae-planar`` and ``vae-iaf``
variants that put them in the VAE, and the ``flow`` sampler (a masked autoregressive flow,
zuko's, fitted on the training codes)."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import standard_vae


@hookimpl
def aepipe_register_bottlenecks(register):
    from aepipe_plugins.bottlenecks.flows import IAF, Planar

    register(Planar)
    register(IAF)


@hookimpl
def aepipe_register_samplers(register):
    from aepipe_plugins.samplers.flow import FlowSampler

    register(FlowSampler)


def _vae_with(bottleneck: dict) -> dict:
    return standard_vae(bottleneck=bottleneck)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("vae-planar",
                     "VAE whose Gaussian posterior is followed by K amortized planar flows (Rezende & Mohamed 2015).",
                     _vae_with({"name": "planar", "flows": 4})))
    register(Variant("vae-iaf",
                     "VAE whose Gaussian posterior is followed by K inverse autoregressive flow steps (Kingma et al. "
                     "2016).",
                     _vae_with({"name": "iaf", "flows": 2})))
