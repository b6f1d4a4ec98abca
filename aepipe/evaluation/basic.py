"""The metrics any trained model has: reconstruction, likelihood and representation.

Every function takes a model in evaluation mode and data scaled to [0, 1] (what the model sees)
and returns plain floats under the names of the vocabulary (without the ``eval_`` prefix):

- reconstruction: ``mse`` (per input element), ``bce`` (nats per example: the binary cross-entropy
  of the inputs under the reconstruction's means), and for images ``psnr`` (dB, per image, data
  range 1) and ``ssim`` (torchmetrics' SSIM, Gaussian window fitted to the image size);
- likelihood, for models whose code has a density: ``iw_nll`` (-log p(x) by the importance-weighted
  bound with K samples, Burda et al.), ``neg_elbo`` and ``kl`` (Monte Carlo over the same K
  samples), ``active_units`` (Burda et al.: code dimensions whose posterior mean varies across the
  data with a variance above 0.01);
- representation, for labelled data: ``probe_accuracy`` (a logistic regression on the standardized
  codes, fitted on the training split, scored on the test split) and ``kmeans_nmi`` (k-means with
  one cluster per class on the test codes, normalized mutual information with the labels).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from aepipe.data import batches
from aepipe.stats import log_mean_exp

if TYPE_CHECKING:  # pragma: no cover
    from aepipe.model import AutoEncoder

#: rows sent through the decoder at once when drawing many importance samples
ROWS_PER_CHUNK = 65_536
#: a code dimension is active when its posterior mean's variance over the data exceeds this
ACTIVE_UNIT_THRESHOLD = 0.01


def _device(model: AutoEncoder) -> torch.device:
    return next(model.parameters()).device


def seeded_batches(model: Any, x: Any, y: torch.Tensor | None = None, batch: int = 1024,
                   seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The batches of a split (or of tensors ``x`` and ``y``), drawn from torch's generators seeded
    with ``seed`` in a fork of them: the same random draws every call (a corruption, importance
    samples), the caller's random stream (training's) untouched. The model is in evaluation mode
    meanwhile, and back in its own mode after."""
    was = model.training
    model.eval()
    device = _device(model)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield from batches(x, y, batch)
    finally:
        model.train(was)


@torch.no_grad()
def reconstruction(
    model: AutoEncoder, split: Any, image_shape: tuple[int, ...] | None, batch: int = 1024
) -> dict[str, float]:
    """``mse``, ``bce`` and, for images, ``psnr`` and ``ssim`` of the reconstructions of ``split``."""
    totals = torch.zeros(4, dtype=torch.float64, device=_device(model))
    n = 0
    for xb, yb in batches(split, batch_size=batch):
        recon = model(xb, yb).clamp(0, 1)
        per = torch.stack([
            (recon - xb).pow(2).mean(1).sum(),
            torch.nn.functional.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), xb, reduction="sum"),
            *(_image_terms(recon, xb, image_shape) if image_shape else (torch.zeros(()), torch.zeros(())))
        ]).to(totals)
        totals += per
        n += xb.shape[0]
    mse, bce, psnr, ssim = (totals / n).tolist()
    out = {"mse": mse, "bce": bce}
    if image_shape:
        out.update(psnr=psnr, ssim=ssim)
    return out


def _image_terms(
    recon: torch.Tensor, x: torch.Tensor, image_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over the batch of each image's PSNR and SSIM."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    shape = _chw(image_shape)
    a, b = recon.reshape(-1, *shape), x.reshape(-1, *shape)
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3)).clamp(max=100.0)
    side = min(shape[1], shape[2])
    kernel = min(11, side - 1 if side % 2 == 0 else side)  # odd, no larger than the image
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, kernel_size=kernel, sigma=1.5 * kernel / 11,
                                               reduction="none")
    return psnr.sum(), ssim.sum()


def _chw(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of a dataset's image shape ((H, W), (H, W, C) or (C, H, W))."""
    if len(image_shape) == 2:
        return (1, *image_shape)
    if image_shape[0] in (1, 3) and image_shape[-1] not in (1, 3):
        return tuple(image_shape)  # type: ignore[return-value]
    h, w, c = image_shape
    return (c, h, w)


def has_density(model: AutoEncoder) -> bool:
    """Whether the model's code has a density and its prior a log-density: the likelihood metrics apply."""
    if model.prior is None or not model.probe().stochastic:
        return False
    y = torch.zeros(1, dtype=torch.long, device=_device(model)) if model.prior.class_conditional else None
    try:
        model.prior.log_prob(model.prior.sample(1, y), y)
    except NotImplementedError:
        return False
    return True


@torch.no_grad()
def likelihood(model: AutoEncoder, split: Any, k: int = 1000, seed: int = 0, batch: int = 256) -> dict[str, float]:
    """``iw_nll``, ``neg_elbo`` and ``kl`` of ``split`` with ``k`` importance samples per example
    (drawn in chunks, so K = 5,000 fits in memory), and ``active_units``."""
    device = _device(model)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    n = 0
    means = []
    for xb, yb in seeded_batches(model, split, batch=batch, seed=seed):
        iw, elbo, kl = importance_terms(model, xb, yb, k)
        sums += torch.stack([-iw.sum(), -elbo.sum(), kl.sum()]).double()
        n += xb.shape[0]
        means.append(model.encode(xb, yb).code.float())
    iw_nll, neg_elbo, kl = (sums / n).tolist()
    codes = torch.cat(means)
    active = int((codes.var(0, unbiased=True) > ACTIVE_UNIT_THRESHOLD).sum()) if len(codes) > 1 else 0
    return {"iw_nll": iw_nll, "neg_elbo": neg_elbo, "kl": kl, "active_units": float(active)}


def importance_terms(model: AutoEncoder, x: torch.Tensor, y: torch.Tensor | None, k: int) -> tuple[torch.Tensor, ...]:
    """Per example: the K-sample importance-weighted bound, and the Monte Carlo ELBO and KL over
    the same K samples."""
    n = x.shape[0]
    chunk = max(1, min(k, ROWS_PER_CHUNK // max(n, 1)))
    y1 = model.one_hot(y)
    log_w, rec, kl = [], torch.zeros(n, device=x.device), torch.zeros(n, device=x.device)
    done = 0
    while done < k:
        m = min(chunk, k - done)
        code = model.encode(x, y, samples=m)
        z = code.z  # (m * n, d), sample-major
        y_rep = None if y is None else y.repeat(m)
        y1_rep = None if y1 is None else y1.repeat(m, 1)
        log_px = -model.likelihood.nll(model.decoder(z, y1_rep), x.repeat(m, 1)).reshape(m, n)
        if code.log_p is not None:  # the bottleneck's own prior terms (a hierarchy's conditional priors)
            log_pz = code.log_p.reshape(m, n)
        else:
            log_pz = model.prior.log_prob(z, y_rep if model.prior.class_conditional else None).reshape(m, n)
        log_q = code.log_q_of_z().reshape(m, n)
        log_w.append(log_px + log_pz - log_q)
        rec += log_px.sum(0)
        kl += (log_q - log_pz).sum(0)
        done += m
    iw = log_mean_exp(torch.cat(log_w), 0)
    return iw, (rec - kl) / k, kl / k


def _codes(model: AutoEncoder, split: Any, batch: int = 4096) -> np.ndarray:
    from aepipe.training.metrics import code_tensor

    return code_tensor(model, split, batch=batch).float().cpu().numpy()


def representation(
    model: AutoEncoder, train: Any, test: Any, n_classes: int, seed: int = 0, max_train: int = 20_000
) -> dict[str, float]:
    """``probe_accuracy`` and ``kmeans_nmi`` of the model's codes (labelled data only)."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z_train, z_test = _codes(model, train), _codes(model, test)
    y_train, y_test = train.y.cpu().numpy(), test.y.cpu().numpy()
    if len(z_train) > max_train:  # a probe's accuracy settles long before this
        keep = np.random.default_rng(seed).choice(len(z_train), max_train, replace=False)
        z_train, y_train = z_train[keep], y_train[keep]
    z_train, z_test = z_train.reshape(len(z_train), -1), z_test.reshape(len(z_test), -1)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(z_train, y_train)
    accuracy = float(probe.score(z_test, y_test))
    clusters = KMeans(n_clusters=max(2, n_classes), n_init=4, random_state=seed).fit_predict(
        StandardScaler().fit_transform(z_test)
    )
    nmi = float(normalized_mutual_info_score(y_test, clusters))
    return {"probe_accuracy": accuracy, "kmeans_nmi": nmi if math.isfinite(nmi) else 0.0}
