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


def reliability_diagram(bins: Mapping, title: str = "Reliability diagram") -> Figure:
    """Accuracy against confidence per bin (as :func:`~mnist_lit.reporting.calibration.reliability_bins` gives them),
    the gap to the diagonal shaded, the count of each bin written above it (log-scaled counts below)."""
    edges = np.asarray(bins["edges"])
    width = np.diff(edges)
    counts = np.asarray(bins["count"])
    accuracy = np.array([np.nan if a is None else a for a in bins["accuracy"]])
    confidence = np.array([np.nan if c is None else c for c in bins["confidence"]])
    filled = counts > 0
    fig = Figure(figsize=(6, 6.8), layout="constrained")
    ax, ax_count = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    ax.bar(edges[:-1][filled], accuracy[filled], width[filled], align="edge", color="tab:blue", edgecolor="white",
           label="accuracy")  # fmt: skip
    low, high = np.minimum(accuracy, confidence), np.maximum(accuracy, confidence)
    ax.bar(edges[:-1][filled], (high - low)[filled], width[filled], bottom=low[filled], align="edge", color="tab:red",
           alpha=0.35, hatch="//", edgecolor="tab:red", label="gap to mean confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    for left, w, n, a in zip(edges[:-1], width, counts, accuracy, strict=True):
        if n:
            ax.text(left + w / 2, min(a, 1.0) + 0.01, str(int(n)), ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {bins['ece']:.4f}, MCE {bins['mce']:.4f} ({bins['n_bins']} bins; count above each bar)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax_count.bar(edges[:-1], counts, width, align="edge", color="gray", edgecolor="white")
    ax_count.set_yscale("symlog", linthresh=1)
    ax_count.set_xlabel("confidence (top probability)")
    ax_count.set_ylabel("images")
    return fig


def attribution_figure(image: np.ndarray, attribution: np.ndarray, title: str, method: str) -> Figure:
    """The 28 x 28 image the network saw beside the attribution map of its answer, and the map over the image."""
    fig = Figure(figsize=(7.2, 2.8), layout="constrained")
    ax_image, ax_map, ax_overlay = fig.subplots(1, 3)
    ax_image.imshow(image, cmap="gray", interpolation="nearest")
    ax_image.set_title("input (28x28)", fontsize=9)
    signed = bool((attribution < 0).any())
    limit = float(np.abs(attribution).max()) or 1.0
    cmap, vmin = ("RdBu_r", -limit) if signed else ("inferno", 0.0)
    shown = ax_map.imshow(attribution, cmap=cmap, vmin=vmin, vmax=limit, interpolation="nearest")
    ax_map.set_title(method, fontsize=9)
    fig.colorbar(shown, ax=ax_map, fraction=0.046, pad=0.04)
    ax_overlay.imshow(image, cmap="gray", interpolation="nearest")
    ax_overlay.imshow(np.abs(attribution), cmap="inferno", alpha=0.6, interpolation="nearest")
    ax_overlay.set_title("overlay (|attribution|)", fontsize=9)
    for ax in (ax_image, ax_map, ax_overlay):
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return fig


def risk_coverage_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], marks: Mapping[str, tuple] | None = None
) -> Figure:
    """Error rate of the answered inputs against the fraction answered, one curve per network; ``marks`` maps a
    network to the (coverage, risk) of its "not sure" threshold."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for name, (coverage, risk) in curves.items():
        (line,) = ax.plot(coverage, 100 * np.asarray(risk), label=name)
        if marks and name in marks:
            c, r = marks[name]
            ax.plot([c], [100 * r], "o", color=line.get_color())
    ax.set_xlabel("coverage (fraction of test images answered)")
    ax.set_ylabel("error rate of the answered (%)")
    ax.set_xlim(0.9, 1.0)
    ax.set_title("Risk-coverage on the MNIST test set (dot: the 'not sure' threshold)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
