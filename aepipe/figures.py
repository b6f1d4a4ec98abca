"""Figures each run logs to MLflow: labelled, readable at a glance."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


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


def reconstruction_grid(inputs: np.ndarray, recons: np.ndarray, image_shape: Sequence[int] | None, title: str = ""):
    """Test inputs (top row of each pair) beside their reconstructions (bottom row)."""
    plt = _plt()
    n = len(inputs)
    cols = min(n, 10)
    pairs = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * pairs, cols, figsize=(1.1 * cols, 2.3 * pairs), squeeze=False)
    a, b = _as_images(inputs, image_shape), _as_images(recons, image_shape)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        axes[2 * r, c].imshow(a[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[2 * r + 1, c].imshow(b[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for r in range(pairs):
        axes[2 * r, 0].set_title("input", fontsize=8, loc="left")
        axes[2 * r + 1, 0].set_title("reconstruction", fontsize=8, loc="left")
    fig.suptitle(title or "Test inputs and their reconstructions", fontsize=10)
    fig.tight_layout()
    return fig


def loss_curves(history: list[dict[str, float]], title: str = ""):
    """Training and validation loss per epoch, with reconstruction and penalties on a second axis."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    keys = [k for k in history[0] if k != "epoch"] if history else []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
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
    fig.tight_layout()
    return fig


def sample_grid(images: np.ndarray, image_shape: Sequence[int] | None, title: str, row_labels: Sequence[str] | None = None, cols: int = 10):
    """Images in rows of ``cols``, each row optionally labelled (e.g. the class it was drawn for)."""
    plt = _plt()
    n = len(images)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.0 * cols + (0.8 if row_labels else 0), 1.05 * rows + 0.5), squeeze=False)
    imgs = _as_images(images, image_shape)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for i in range(n):
        r, c = divmod(i, cols)
        axes[r, c].imshow(imgs[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if row_labels:
        for r, label in enumerate(row_labels[:rows]):
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def latent_scatter(codes: np.ndarray, labels: np.ndarray | None, title: str):
    """The code in 2-D (its first two principal components above 2-D), coloured by label."""
    plt = _plt()
    if codes.shape[1] > 2:
        centred = codes - codes.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        points, axis = centred @ vt[:2].T, ("PC 1 of the code", "PC 2 of the code")
    elif codes.shape[1] == 2:
        points, axis = codes, ("z1", "z2")
    else:
        points, axis = np.column_stack([codes[:, 0], np.zeros(len(codes))]), ("z1", "")
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    if labels is not None:
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
        handles, names = sc.legend_elements()
        ax.legend(handles, names, title="label", fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.8)
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
