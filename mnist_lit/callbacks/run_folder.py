"""Where a run's outputs go: its own folder, and TensorBoard's SummaryWriter among the trainer's loggers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from mnist_lit.callbacks.checkpoint import RunCheckpoint

if TYPE_CHECKING:
    from mnist_lit.data.datamodule import MNISTDataModule
    from mnist_lit.models.base import MNISTClassifier


def run_dir(trainer: pl.Trainer) -> Path | None:
    """The run's own folder (``lightning_logs/<name>/version_N``), or None when the run has none.

    Without a TensorBoard or CSV logger (``logger: false``, ``fast_dev_run``) there is no versioned folder, and
    writing into ``default_root_dir`` (usually the current folder) could replace a user's files, so callers skip
    their files instead. Unlike ``Trainer.log_dir``, this does not broadcast from rank 0, a collective call that
    would hang when only rank 0 asks, as it does in the hooks that write files.
    """
    for logger in trainer.loggers:
        if isinstance(logger, (TensorBoardLogger, CSVLogger)):
            return Path(logger.log_dir)
    return None


def run_dir_or_warn(trainer: pl.Trainer, what: str) -> Path | None:
    """:func:`run_dir`, warning (once per message) that ``what`` is not written when there is no run folder."""
    folder = run_dir(trainer)
    if folder is None:
        rank_zero_warn(f"No TensorBoard or CSV logger, so no run folder: {what} not written.")
    return folder


def tensorboard_writer(trainer: pl.Trainer) -> SummaryWriter | None:
    """The first TensorBoardLogger's writer, or None (no logger, or Lightning fell back to CSV)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def emit_figure(trainer: pl.Trainer, name: str, fig: Figure, dpi: int) -> Path | None:
    """Save ``fig`` as ``<run folder>/figures/<name>.png`` and log it to TensorBoard, each where there is one.

    The figure is drawn once, and the same pixels go to both (``savefig`` and TensorBoard's ``add_figure`` would
    each draw it again).
    """
    folder = run_dir_or_warn(trainer, "figures")
    writer = tensorboard_writer(trainer)
    if folder is None and writer is None:
        return None
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    out = None
    if folder is not None:
        out = folder / "figures" / f"{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out)
    if writer is not None:
        writer.add_image(f"figures/{name}", pixels, global_step=trainer.global_step, dataformats="HWC")
    return out


def require_classifier(callback: Callback, pl_module: pl.LightningModule) -> MNISTClassifier:
    """``pl_module`` as the mnist_lit network it must be; fails, with a message, when ``callback`` is given a module
    without the evaluation it reads (called at set-up, so a wrong module stops the run before it starts)."""
    from mnist_lit.models.base import MNISTClassifier  # imported when first used: importing it loads Lightning

    if not isinstance(pl_module, MNISTClassifier):
        raise TypeError(
            f"{type(callback).__name__} reads the evaluation an mnist_lit network computes; "
            f"{type(pl_module).__name__} is not one (use a network from mnist_lit.models)."
        )
    return pl_module


def require_datamodule(reader: Callback | pl.LightningModule, trainer: pl.Trainer) -> MNISTDataModule:
    """The trainer's data module as the :class:`~mnist_lit.data.datamodule.MNISTDataModule` it must be; fails, with a
    message, when ``reader`` (a callback, or a module) runs without one (it reads the names, labels, normalization or
    inputs the data module holds)."""
    from mnist_lit.data.datamodule import MNISTDataModule  # imported when first used: importing it loads Lightning

    datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
    if not isinstance(datamodule, MNISTDataModule):
        raise TypeError(
            f"{type(reader).__name__} reads what mnist_lit's data module holds; the trainer was given "
            f"{type(datamodule).__name__} (run with mnist_lit.data.MNISTDataModule, as the command line does)."
        )
    return datamodule


def best_checkpoint(trainer: pl.Trainer) -> dict[str, Any]:
    """What the run's ``ModelCheckpoint`` knows of the best checkpoint: its path, and, when it monitors a metric,
    that metric's name and score, and the checkpoint's epoch (from 0) where it is a
    :class:`~mnist_lit.callbacks.checkpoint.RunCheckpoint`. Empty when there is no checkpoint."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or not callback.best_model_path:
        return {}
    facts: dict[str, Any] = {"best_checkpoint": callback.best_model_path}
    if callback.monitor is not None and callback.best_model_score is not None:
        facts.update(monitor=callback.monitor, best_score=float(callback.best_model_score))
        if isinstance(callback, RunCheckpoint) and callback.best_epoch is not None:
            facts["best_epoch"] = callback.best_epoch
    return facts
