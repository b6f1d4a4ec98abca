"""Regularizers: every penalty and bound a preset composes (KL and importance-weighted bounds, total-correlation
and covariance penalties, divergences to the prior, sparsity, weight, contractive, adversarial and perceptual terms).

Parts only: the plugins that register them are the family modules of :mod:`aepipe_plugins.families`."""
