"""Figures of experiments: a sweep's per-seed accuracies (a pure function to a Figure) and Optuna's own plots."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from mnist_lit.experiments.stats import Spread
from mnist_lit.utils.io import atomic_write_bytes

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


def seed_accuracies(seeds: Sequence[int], accuracies: Sequence[float], acc: Spread, title: str) -> Figure:
    """Each seed's test accuracy as a point, the mean as a line and its 95% interval as a band (in percent)."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(seeds))
    ax.scatter(x, np.asarray(accuracies) * 100, color="tab:blue", zorder=3, label="one seed")
    ax.axhline(acc.mean * 100, color="tab:red", label=f"mean {acc.mean * 100:.3f}%")
    if acc.ci_low is not None and acc.ci_high is not None:
        ax.axhspan(acc.ci_low * 100, acc.ci_high * 100, color="tab:red", alpha=0.15, label="95% CI of the mean")
    ax.set_xticks(x, [str(s) for s in seeds])
    ax.set_xlabel("seed")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """Save ``fig`` as a PNG, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def save_study_figures(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's optimization history and parameter importances (``optuna.visualization.matplotlib``) as PNGs.

    Importances need at least two finished trials with different values; without them only the history is drawn.
    """
    import matplotlib.pyplot as plt  # Optuna's matplotlib plots draw through pyplot
    import optuna
    from optuna.visualization import matplotlib as ovm

    saved = []
    plots: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history": ovm.plot_optimization_history,
        "param_importances": ovm.plot_param_importances,
    }
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as err:
                log.info(f"No {name} figure: {err}")
                continue
        figure = ax.figure if hasattr(ax, "figure") else np.ravel(ax)[0].figure
        saved.append(save_png(figure, folder / f"{name}.png"))
        plt.close(figure)
    return saved
