"""Figures each run logs to MLflow: labelled, readable at a glance.

Built on matplotlib's object API (``matplotlib.figure.Figure``, no pyplot), and image grids are
drawn as one tiled image rather than an axes per picture: a run's figures cost tenths of a
second, not seconds.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _as_images(x: np.ndarray, image_shape: Sequence[int] | None) -> np.ndarray:
    """Flat rows -> (n, H, W) grey images (or (n, H, W, C) colour); 1-D inputs become a strip."""
    n = len(x)
    if image_shape:
        c, h, w = image_shape
        imgs = x.reshape(n, c, h, w)
        return imgs[:, 0] if c == 1 else imgs.transpose(0, 2, 3, 1)
    d = x.shape[1]
    side = int(math.isqrt(d))
    if side * side == d:
        return x.reshape(n, side, side)
    return x.reshape(n, 1, d)


def _mosaic(rows: list[np.ndarray], cols: int, gap: int = 1) -> np.ndarray:
    """Rows of images tiled into one image, ``gap`` pixels of white between them."""
    first = rows[0][0]
    h, w = first.shape[:2]
    extra = first.shape[2:]
    out = np.ones((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, *extra), dtype=np.float32)
    for r, row in enumerate(rows):
        for c, img in enumerate(row[:cols]):
            out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = np.clip(img, 0, 1)
    return out


def _grid_figure(rows: list[np.ndarray], labels: list[str], cols: int, title: str):
    """One image of labelled rows of pictures."""
    h, w = rows[0][0].shape[:2]
    aspect = (len(rows) * h) / max(1, cols * w)
    width = 1.0 * cols + 1.4
    fig = _figure(width, min(14.0, width * aspect * 0.86 + 0.7))
    ax = fig.add_axes((1.3 / width, 0.02, 1 - 1.4 / width, 0.86))
    ax.imshow(_mosaic(rows, cols), cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for r, label in enumerate(labels):
        if label:
            ax.text(-0.5, r * (h + 1) + h / 2, label, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def reconstruction_grid(inputs: np.ndarray, recons: np.ndarray, image_shape: Sequence[int] | None, title: str = ""):
    """Test inputs (top row of each pair) beside their reconstructions (bottom row)."""
    n = len(inputs)
    cols = min(n, 10)
    a, b = _as_images(inputs, image_shape), _as_images(recons, image_shape)
    rows, labels = [], []
    for start in range(0, n, cols):
        rows += [a[start : start + cols], b[start : start + cols]]
        labels += ["input", "reconstruction"]
    return _grid_figure(rows, labels, cols, title or "Test inputs and their reconstructions")


def loss_curves(history: list[dict[str, float]], title: str = ""):
    """Training and validation loss per epoch, with reconstruction and penalties on a second axis."""
    epochs = [h["epoch"] for h in history]
    keys = [k for k in history[0] if k != "epoch"] if history else []
    fig = _figure(10, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.82, wspace=0.25)
    for key in ("loss", "val_loss"):
        if key in keys:
            ax1.plot(epochs, [h[key] for h in history], label=key, marker="." if len(epochs) < 40 else None)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (nats per example)")
    ax1.set_title("Total loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    parts = [k for k in keys if k == "recon" or k.startswith("penalty.")]
    for key in parts:
        ax2.plot(epochs, [h[key] for h in history], label=key)
    ax2.set_xlabel("epoch")
    ax2.set_title("Loss terms (training)")
    if parts:
        ax2.set_yscale("symlog", linthresh=1e-3)
        ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def sample_grid(images: np.ndarray, image_shape: Sequence[int] | None, title: str,
                row_labels: Sequence[str] | None = None, cols: int = 10):
    """Images in rows of ``cols``, each row optionally labelled (e.g. the class it was drawn for)."""
    imgs = _as_images(images, image_shape)
    rows = [imgs[start : start + cols] for start in range(0, len(imgs), cols)]
    labels = list(row_labels or [])[: len(rows)]
    return _grid_figure(rows, labels + [""] * (len(rows) - len(labels)), cols, title)


def latent_scatter(codes: np.ndarray, labels: np.ndarray | None, title: str):
    """The code in 2-D (its first two principal components above 2-D), coloured by label."""
    if codes.shape[1] > 2:
        centred = codes - codes.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        points, axis = centred @ vt[:2].T, ("PC 1 of the code", "PC 2 of the code")
    elif codes.shape[1] == 2:
        points, axis = codes, ("z1", "z2")
    else:
        points, axis = np.column_stack([codes[:, 0], np.zeros(len(codes))]), ("z1", "")
    fig = _figure(5.6, 4.8)
    ax = fig.add_axes((0.13, 0.1, 0.66, 0.8))
    if labels is not None:
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
        handles, names = sc.legend_elements()
        ax.legend(
            handles, names, title="label", fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5)
        )
    else:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.8)
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig
