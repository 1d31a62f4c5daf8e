"""Figures for a report: pure functions from arrays to matplotlib Figures, with no Lightning inside.

They build ``matplotlib.figure.Figure`` objects directly rather than through pyplot, so no GUI backend is
involved and nothing global is left open: the caller saves or logs the figure and lets it go.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure


def image_grid(
    images: np.ndarray, titles: Sequence[str], suptitle: str, ncols: int = 8, title_colors: Sequence[str] | None = None
) -> Figure:
    """A grid of grayscale images (N x H x W), each with a short title, like the notebooks' sample plots."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(1.5 * ncols, 1.5 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i], cmap="gray")
            color = title_colors[i] if title_colors is not None else "black"
            ax.set_title(titles[i], fontsize=8, color=color)
    fig.suptitle(suptitle)
    return fig


def training_curves(history: Mapping[str, Mapping[int, float]], best_epoch: int | None = None) -> Figure:
    """Loss and accuracy per epoch, train beside val, as Keras' ``history`` plots; marks the best epoch.

    ``history`` maps ``"train/loss"``, ``"val/acc"``, ... to {epoch (from 0): value}; epochs are drawn from 1.
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric, label in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "acc", "accuracy")):
        for stage, style in (("train", "o-"), ("val", "s--")):
            points = sorted(history.get(f"{stage}/{metric}", {}).items())
            if points:
                ax.plot([epoch + 1 for epoch, _ in points], [value for _, value in points], style, label=stage)
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="gray", linestyle=":", label=f"best epoch ({best_epoch + 1})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label.capitalize()} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_heatmap(cm: np.ndarray, title: str = "Confusion matrix") -> Figure:
    """The confusion matrix as a heatmap with the count in each cell (rows: true, columns: predicted)."""
    cm = np.asarray(cm)
    n = cm.shape[0]
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.subplots()
    shown = np.log1p(cm)  # a log scale keeps the few mistakes visible beside the large diagonal
    image = ax.imshow(shown, cmap="Blues")
    threshold = shown.max() / 2
    for i in range(n):
        for j in range(n):
            color = "white" if shown[i, j] > threshold else "black"
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(f"{title} ({int(cm.sum())} images, accuracy {np.trace(cm) / cm.sum():.2%})")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    return fig
