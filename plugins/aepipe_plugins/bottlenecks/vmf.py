"""The von Mises-Fisher posterior on the unit sphere S^(m-1) of R^m (m = code_dim), the uniform
distribution there, the KL between them, and the ``vmf`` bottleneck and ``spherical-uniform``
prior that put them in a model (Davidson et al. 2018, "Hyperspherical variational autoencoders").

Densities are with respect to the surface measure of the sphere::

    vMF(z; mu, kappa) = C_m(kappa) exp(kappa mu.z),
    log C_m(kappa)    = v log kappa - (m / 2) log 2 pi - log I_v(kappa),   v = m / 2 - 1,
    uniform(z)        = 1 / area(S^(m-1)) = Gamma(m / 2) / (2 pi^(m / 2)),
    KL(vMF || uniform) = kappa A_m(kappa) + log C_m(kappa) + log area(S^(m-1)),

with A_m(kappa) = I_(m/2)(kappa) / I_(m/2-1)(kappa) = E[mu.z], the mean resultant length.

Bessel functions. ``scipy.special.ive`` (I_v(k) e^-k, exponentially scaled) gives the values:
log I_v(k) = log ive(v, k) + k does not overflow for large kappa, as I_v itself would past
kappa ~ 700. torch cannot differentiate scipy, so :class:`LogBessel` and :class:`BesselRatio`
are autograd functions whose backward passes use the recurrences
d/dk log I_v(k) = R_v(k) + v / k and R_v'(k) = 1 - R_v(k)^2 - (2v + 1) R_v(k) / k, where
R_v = I_(v+1) / I_v = ive(v+1, k) / ive(v, k) (a ratio of scaled values: stable for any kappa).
Where ive underflows to 0 (small kappa in high dimension) the leading term of the series,
log I_v(k) ~ v log(k / 2) - log Gamma(v + 1) and R_v(k) ~ k / (2v + 2), takes over. The values
are computed in float64 on the CPU and returned in the input's dtype and device.

Sampling (Wood 1994): w = mu.z, the component along the mean, by rejection from a transformed
Beta((m-1)/2, (m-1)/2) variable eps; a direction v uniform on S^(m-2) (a normalised Gaussian);
z' = (w, sqrt(1 - w^2) v) is a draw around e_1, and the Householder reflection that maps e_1 to
mu turns it into a draw around mu. The draw is reparameterised as in the paper: the accepted
eps is held fixed and w(eps, kappa) carries the gradient to kappa (g_rep); the reflection carries
it to mu. The correction term of the rejection step (g_cor) is left out: the pathwise gradient
of E[w] in kappa is then biased low, by about 10% at kappa = 5 on S^7 and 30% at kappa = 2 on
S^2 (we measured it against A_m'(kappa)), less as kappa or m grows. The KL's gradient, in
closed form, is exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy import special
from torch.distributions import Distribution, constraints
from torch.distributions.kl import register_kl

from aepipe.plugin import Bottleneck, Code, ComponentConfig, ConfigError, Encoding, ModelSpec, Prior, require

#: Wood's sampler gives up after this many rounds (its acceptance rate is above one half)
MAX_ROUNDS = 1000


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _log_bessel_np(v: float, k: np.ndarray) -> np.ndarray:
    scaled = special.ive(v, k)
    with np.errstate(divide="ignore"):
        out = np.log(scaled) + k
    small = ~(scaled > 0) | ~np.isfinite(out)  # underflow: the series' leading term
    if small.any():
        ks = k[small]
        out[small] = v * np.log(ks / 2) - special.gammaln(v + 1)
    return out


def _ratio_np(v: float, k: np.ndarray) -> np.ndarray:
    num, den = special.ive(v + 1, k), special.ive(v, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    bad = ~(den > 0) | ~np.isfinite(out)
    if bad.any():
        out[bad] = k[bad] / (2 * v + 2)
    return out


class LogBessel(torch.autograd.Function):
    """log I_v(kappa) of a tensor kappa > 0 (order v a float), differentiable in kappa."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, v: float) -> torch.Tensor:
        ctx.v = v
        ctx.save_for_backward(kappa)
        return torch.from_numpy(_log_bessel_np(v, _as_numpy(kappa))).to(kappa)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kappa,) = ctx.saved_tensors
        derivative = bessel_ratio(kappa.detach(), ctx.v) + ctx.v / kappa.detach()
        return grad * derivative, None


class BesselRatio(torch.autograd.Function):
    """R_v(kappa) = I_(v+1)(kappa) / I_v(kappa), differentiable in kappa."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, v: float) -> torch.Tensor:
        ratio = torch.from_numpy(_ratio_np(v, _as_numpy(kappa))).to(kappa)
        ctx.v = v
        ctx.save_for_backward(kappa, ratio)
        return ratio

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kappa, ratio = ctx.saved_tensors
        derivative = 1 - ratio.pow(2) - (2 * ctx.v + 1) * ratio / kappa
        return grad * derivative, None


def log_bessel(kappa: torch.Tensor, v: float) -> torch.Tensor:
    """log I_v(kappa), elementwise (see the module's notes on stability and gradients)."""
    return LogBessel.apply(kappa, float(v))


def bessel_ratio(kappa: torch.Tensor, v: float) -> torch.Tensor:
    """I_(v+1)(kappa) / I_v(kappa), elementwise."""
    return BesselRatio.apply(kappa, float(v))


def log_sphere_area(m: int) -> float:
    """log of the surface area of the unit sphere S^(m-1) in R^m: log 2 pi^(m/2) / Gamma(m/2)."""
    return math.log(2) + (m / 2) * math.log(math.pi) - math.lgamma(m / 2)


class VonMisesFisher(Distribution):
    """vMF(mu, kappa) on S^(m-1): ``loc`` (..., m) of unit norm, ``scale`` kappa (...,) > 0."""

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.positive}
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None):
        self.loc, self.scale = loc, scale
        self.m = loc.shape[-1]
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    @property
    def mean(self) -> torch.Tensor:
        """E[z] = A_m(kappa) mu (inside the ball: the mean of points on the sphere)."""
        return self.mean_length().unsqueeze(-1) * self.loc

    def mean_length(self) -> torch.Tensor:
        """A_m(kappa) = E[mu.z]."""
        return bessel_ratio(self.scale, self.m / 2 - 1)

    def log_normalizer(self) -> torch.Tensor:
        """log C_m(kappa)."""
        v = self.m / 2 - 1
        return v * torch.log(self.scale) - (self.m / 2) * math.log(2 * math.pi) - log_bessel(self.scale, v)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.log_normalizer() + self.scale * (self.loc * z).sum(-1)

    def entropy(self) -> torch.Tensor:
        return -self.log_normalizer() - self.scale * self.mean_length()

    def sample_w(self, shape: torch.Size) -> torch.Tensor:
        """w = mu.z of ``shape + batch_shape`` draws (Wood's rejection sampler, in float64)."""
        kappa = self.scale.to(torch.float64)
        m1 = self.m - 1.0
        root = torch.sqrt(4 * kappa.pow(2) + m1 ** 2)
        b = m1 / (2 * kappa + root)  # = (-2 kappa + root) / (m - 1), without the cancellation
        a = (m1 + 2 * kappa + root) / 4
        d = 4 * a * b / (1 + b) - m1 * math.log(m1)
        full = torch.Size(shape) + kappa.shape
        b, a, d = (t.expand(full) for t in (b, a, d))
        beta = torch.distributions.Beta(torch.tensor(m1 / 2, dtype=torch.float64, device=kappa.device),
                                        torch.tensor(m1 / 2, dtype=torch.float64, device=kappa.device))
        eps = torch.zeros(full, dtype=torch.float64, device=kappa.device)
        done = torch.zeros(full, dtype=torch.bool, device=kappa.device)
        with torch.no_grad():
            for _ in range(MAX_ROUNDS):
                e = beta.sample(full)
                u = torch.rand(full, dtype=torch.float64, device=kappa.device)
                t = 2 * a * b / (1 - (1 - b) * e)
                accept = (m1 * torch.log(t) - t + d >= torch.log(u)) & ~done
                eps = torch.where(accept, e, eps)
                done = done | accept
                if bool(done.all()):
                    break
            else:  # pragma: no cover - the acceptance rate is above one half
                raise RuntimeError(f"vMF sampler: no acceptance after {MAX_ROUNDS} rounds")
        # the accepted eps is fixed; w carries the gradient to kappa through b
        w = (1 - (1 + b) * eps) / (1 - (1 - b) * eps)
        return w.to(self.scale.dtype)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        w = self.sample_w(shape).unsqueeze(-1)
        full = shape + self.loc.shape
        v = F.normalize(torch.randn(*full[:-1], self.m - 1, dtype=self.loc.dtype, device=self.loc.device), dim=-1)
        around_e1 = torch.cat([w, torch.sqrt((1 - w.pow(2)).clamp_min(1e-12)) * v], -1)
        # the Householder reflection that swaps e_1 and mu
        e1 = torch.zeros_like(self.loc)
        e1[..., 0] = 1
        u = e1 - self.loc
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return around_e1 - 2 * (around_e1 * u).sum(-1, keepdim=True) * u


class HypersphericalUniform(Distribution):
    """The uniform distribution on S^(m-1) in R^m."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, m: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 validate_args: bool | None = None):
        self.m, self.device, self.dtype = m, torch.device(device), dtype
        super().__init__(torch.Size(), torch.Size([m]), validate_args=validate_args)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        g = torch.randn(*sample_shape, self.m, device=self.device, dtype=self.dtype)
        return F.normalize(g, dim=-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full(z.shape[:-1], -log_sphere_area(self.m), device=z.device, dtype=z.dtype)

    def entropy(self) -> torch.Tensor:
        return torch.tensor(log_sphere_area(self.m), device=self.device, dtype=self.dtype)


@register_kl(VonMisesFisher, HypersphericalUniform)
def kl_vmf_uniform(q: VonMisesFisher, p: HypersphericalUniform) -> torch.Tensor:
    """KL(vMF(mu, kappa) || uniform on S^(m-1)) = kappa A_m(kappa) + log C_m(kappa) + log area."""
    require(q.m == p.m, f"the vMF lives on S^{q.m - 1}, the uniform on S^{p.m - 1}")
    # in float64: the terms are large and of opposite signs where kappa is small and m large
    wide = VonMisesFisher(q.loc.double(), q.scale.double(), validate_args=False)
    return (log_sphere_area(q.m) - wide.entropy()).to(q.scale.dtype)


class VMFConfig(ComponentConfig):
    """``min_kappa``: added to the softplus of the encoder's concentration output (the paper adds
    1: a vMF with kappa near 0 is nearly uniform and its sampler and Bessel terms are at their
    least accurate there); ``max_kappa``: kappa is clamped to it (a posterior sharper than that
    carries no more information at float32's resolution of w = mu.z)."""

    min_kappa: float = Field(1.0, ge=0.0, description="added to softplus of the encoder's concentration output")
    max_kappa: float = Field(1e5, gt=0.0, description="kappa is clamped to it")


class VMFBottleneck(Bottleneck):
    """q(z | x) = vMF(mu, kappa) on the unit sphere of R^code_dim, from the encoder's
    ``code_dim + 1`` features: a direction normalised to mu, and kappa = ``min_kappa`` +
    softplus(.). The decoder sees L = ``model.samples`` reparameterised draws (Wood's sampler
    and a Householder reflection); ``code`` is mu. ``encode --what mean`` is mu, ``sample`` one
    draw, ``kappa`` the concentration (n, 1). The ``kl`` regularizer takes the posterior from
    here: against the ``spherical-uniform`` prior in closed form, Monte Carlo otherwise."""

    name = "vmf"
    support = "sphere"
    Config = VMFConfig
    what = ("mean", "sample", "kappa")

    def __init__(self, config: VMFConfig, spec: ModelSpec):
        super().__init__(config, spec)
        require(
            spec.code_dim >= 2,
            f"the vMF lives on the sphere S^(code_dim - 1): code_dim must be at least 2, got {spec.code_dim}",
        )
        require(
            config.min_kappa < config.max_kappa,
            f"min_kappa {config.min_kappa} must be below max_kappa {config.max_kappa}",
        )

    @classmethod
    def features(cls, config: VMFConfig, spec: ModelSpec) -> int:
        return spec.code_dim + 1

    def setup(self, model) -> None:
        if model.probe(features=True).dist is not None:
            raise ConfigError(
                f"encoder '{model.encoder.name}' gives a posterior of its own (distribution = \"gaussian\"); "
                'the vmf bottleneck takes a direction and a concentration: set the encoder\'s distribution = "none"'
            )

    def posterior(self, encoding: Encoding) -> VonMisesFisher:
        direction, raw = encoding.code[:, :-1], encoding.code[:, -1]
        kappa = (F.softplus(raw) + self.config.min_kappa).clamp(max=self.config.max_kappa)
        return VonMisesFisher(F.normalize(direction, dim=-1), kappa)

    def forward(self, encoding: Encoding, y_onehot: torch.Tensor | None = None, samples: int = 1) -> Code:
        q = self.posterior(encoding)
        n = q.loc.shape[0]
        z = q.rsample((samples,)).reshape(samples * n, -1)
        return Code(q.loc, z, samples, dist=q, outputs={"mean": q.loc, "sample": z[:n], "kappa": q.scale.unsqueeze(-1)})


class SphericalUniform(Prior):
    """The uniform distribution on the unit sphere S^(code_dim - 1): draws are normalised
    Gaussians, the log density is -log of the sphere's area. With the ``vmf`` bottleneck the
    ``kl`` regularizer's KL is in closed form (Davidson et al. 2018)."""

    name = "spherical-uniform"
    draws = "sphere"

    def __init__(self, config: ComponentConfig, spec: ModelSpec):
        super().__init__(config, spec)
        require(spec.code_dim >= 2, f"the sphere S^(code_dim - 1) needs code_dim of at least 2, got {spec.code_dim}")
        self.register_buffer("anchor", torch.zeros(()))  # follows the model's device and dtype

    def setup(self, model) -> None:
        probe = model.probe()
        if probe.stochastic:  # a density on the sphere is compared with one off it: meaningless
            norm = float(probe.z.norm(dim=-1).sub(1).abs().max())
            if norm > 1e-3:
                raise ConfigError(f"prior '{self.name}' has a density on the unit sphere only; bottleneck "
                                  f"'{model.bottleneck.name or 'none'}' draws codes off it (use the vmf bottleneck)")

    def distribution(self, y: torch.Tensor | None = None) -> HypersphericalUniform:
        return HypersphericalUniform(self.spec.code_dim, self.anchor.device, self.anchor.dtype)

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.distribution().sample((n,))

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.distribution().log_prob(z)
