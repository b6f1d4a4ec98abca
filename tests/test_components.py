"""Encoders, decoders and likelihoods: shapes, formulas, conditioning."""

from __future__ import annotations

import math

import pytest
import torch

from aepipe.components import ModelSpec
from aepipe.errors import ConfigError
from aepipe.likelihoods import Bernoulli, Gaussian

from aepipe_plugins.networks import basic as nets


@pytest.mark.parametrize("image", [(1, 8, 8), (1, 28, 28), (1, 7, 5), (3, 9, 12)])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("kind", ["one-layer", "mlp", "conv"])
def test_encoder_decoder_shapes(image, conditional, kind):
    d = math.prod(image)
    spec = ModelSpec(input_dim=d, code_dim=6, image_shape=image, n_classes=4, conditional=conditional)
    enc_cls = {"one-layer": nets.OneLayerEncoder, "mlp": nets.MLPEncoder, "conv": nets.ConvEncoder}[kind]
    dec_cls = {"one-layer": nets.OneLayerDecoder, "mlp": nets.MLPDecoder, "conv": nets.ConvDecoder}[kind]
    enc, dec = enc_cls(enc_cls.Config(), spec), dec_cls(dec_cls.Config(), spec)
    x = torch.rand(5, d)
    y = torch.nn.functional.one_hot(torch.arange(5) % 4, 4).float() if conditional else None
    code = enc(x, y).code
    assert code.shape == (5, 6)
    assert dec(code, y).shape == (5, d)


def test_gaussian_encoder_head_gives_a_distribution():
    spec = ModelSpec(input_dim=10, code_dim=3)
    enc = nets.MLPEncoder(nets.MLPEncoderConfig(distribution="gaussian", hidden=[8]), spec)
    e = enc(torch.rand(4, 10))
    assert e.stochastic and e.dist.batch_shape == (4,) and e.dist.event_shape == (3,)
    assert torch.allclose(e.dist.mean, e.code)
    assert e.dist.rsample((2,)).shape == (2, 4, 3)


def test_conv_needs_images():
    with pytest.raises(ConfigError, match="conv encoder needs image data"):
        nets.ConvEncoder(nets.ConvConfig(), ModelSpec(input_dim=10, code_dim=2))


def test_one_layer_is_the_notes_formula():
    spec = ModelSpec(input_dim=5, code_dim=3)
    enc = nets.OneLayerEncoder(nets.OneLayerEncoderConfig(activation="sigmoid"), spec)
    x = torch.rand(2, 5)
    w, b = enc.head.weight, enc.head.bias
    assert torch.allclose(enc(x).code, torch.sigmoid(x @ w.T + b))
    lin = nets.OneLayerEncoder(nets.OneLayerEncoderConfig(activation="identity"), spec)
    assert torch.allclose(lin(x).code, x @ lin.head.weight.T + lin.head.bias)


def test_bernoulli_nll_is_binary_cross_entropy_and_stable():
    logits = torch.tensor([[0.3, -2.0, 5.0]])
    x = torch.tensor([[1.0, 0.0, 0.5]])
    p = torch.sigmoid(logits)
    manual = -(x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    assert torch.allclose(Bernoulli().nll(logits, x), manual, atol=1e-6)
    extreme = Bernoulli().nll(torch.tensor([[200.0, -200.0]]), torch.tensor([[0.0, 1.0]]))
    assert torch.isfinite(extreme).all() and float(extreme) == pytest.approx(400.0)


def test_gaussian_nll_matches_torch_distributions():
    mean, x = torch.randn(3, 4), torch.randn(3, 4)
    for sigma in (1.0, 0.3):
        ref = -torch.distributions.Normal(mean, sigma).log_prob(x).sum(-1)
        assert torch.allclose(Gaussian(sigma).nll(mean, x), ref, atol=1e-5)
