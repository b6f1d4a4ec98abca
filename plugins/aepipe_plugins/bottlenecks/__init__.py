"""Bottlenecks: the code's family (deterministic, Gaussian, flows, quantized, categorical, von Mises-Fisher),
with the priors that belong to one family of codes (the uniform categorical and spherical priors).

Parts only: the plugins that register them are the family modules of :mod:`aepipe_plugins.families`."""
