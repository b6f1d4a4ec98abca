"""First-party feature spaces for generation metrics: ``domain`` (a small classifier trained once
per dataset on its own training split, cached in the store; offline for any labelled dataset) and
``inception`` (Inception-v3 pool features, the space published FIDs use; needs the ``fid`` extra)."""

from aepipe.plugin import hookimpl


@hookimpl
def aepipe_register_feature_spaces(register):
    from aepipe_plugins.features import domain, inception

    register(domain.DomainFeatures)
    register(inception.InceptionFeatures)
