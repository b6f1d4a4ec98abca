"""Samplers fitted on the training codes after training: the prior, a GMM, a flow, an autoregressive prior over
codeword indices.

Parts only: the plugins that register them are the family modules of :mod:`aepipe_plugins.families`."""
