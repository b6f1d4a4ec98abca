"""Priors p(z): standard normal, a mixture of Gaussians, a swiss roll and the VampPrior.

Parts only: the plugins that register them are the family modules of :mod:`aepipe_plugins.families`."""
