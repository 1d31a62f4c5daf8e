"""Figures for a report: pure functions from arrays to matplotlib Figures, with no Lightning inside.

They build ``matplotlib.figure.Figure`` objects directly rather than through pyplot, so no GUI backend is
involved and nothing global is left open: the caller saves or logs the figure and lets it go.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure


def image_grid(
    images: np.ndarray, titles: Sequence[str], suptitle: str, ncols: int = 8, title_colors: Sequence[str] | None = None
) -> Figure:
    """A grid of grayscale images (N x H x W), each with a short title, like the notebooks' sample plots.

    The images are laid into one mosaic drawn by a single ``imshow``, each scaled to its own range as ``imshow`` of it
    alone would, with the titles as text above them: one axes instead of one per image, which draws a 24-image grid
    several times faster.
    """
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    height, width = images.shape[1:3]
    band, gap = max(2, round(height / 3)), max(1, round(width / 7))  # room for a title above each image, and between
    cell_h, cell_w = height + band, width + gap
    mosaic = np.full((nrows * cell_h, ncols * cell_w - gap), np.nan)
    for i, image in enumerate(np.asarray(images, dtype=float)):
        low, high = np.nanmin(image), np.nanmax(image)
        top, left = (i // ncols) * cell_h + band, (i % ncols) * cell_w
        mosaic[top : top + height, left : left + width] = (image - low) / (high - low) if high > low else 0.0
    fig = Figure(figsize=(1.5 * ncols, 1.5 * nrows + 0.6))
    ax = fig.add_axes((0.005, 0.0, 0.99, 1 - 0.6 / (1.5 * nrows + 0.6)))
    ax.set_axis_off()
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    for i, title in enumerate(titles[:n]):
        color = title_colors[i] if title_colors is not None else "black"
        x, y = (i % ncols) * cell_w + (width - 1) / 2, (i // ncols) * cell_h + band - 1.5
        ax.text(x, y, title, fontsize=8, color=color, ha="center", va="bottom")
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
