"""Encoders and decoders: one-layer, MLP and small convolutional networks (``basic``) and residual ones (``resnet``).

Parts only: the plugins that register them are the family modules of :mod:`aepipe_plugins.families`."""
