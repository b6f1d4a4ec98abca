"""Wasserstein autoencoders for aepipe."""
