"""Corruptions of the inputs, used in training only (denoising autoencoders).

Parts only: the plugins that register them are the family modules of :mod:`aepipe_plugins.families`."""
