"""Where a run's outputs go: its own folder, and TensorBoard's SummaryWriter among the trainer's loggers."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

CallbackT = TypeVar("CallbackT", bound=Callback)


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
    """Save ``fig`` as ``<run folder>/figures/<name>.png`` and log it to TensorBoard, each where there is one."""
    folder = run_dir_or_warn(trainer, "figures")
    out = None
    if folder is not None:
        out = folder / "figures" / f"{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
    writer = tensorboard_writer(trainer)
    if writer is not None:
        writer.add_figure(f"figures/{name}", fig, global_step=trainer.global_step)
    return out


def find_callback(trainer: pl.Trainer, kind: type[CallbackT]) -> CallbackT | None:
    """The trainer's first callback of type ``kind``, if it has one."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)


class RunConfigSaver(SaveConfigCallback):
    """LightningCLI's config saver, writing ``config.yaml`` only into a run's own folder.

    Each run gets a new ``version_N`` folder, so overwriting is safe there (and re-running with a fixed
    version does not fail); without a logger the stock saver would write ``./config.yaml``, perhaps over a file
    of the user's, so nothing is saved then.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if run_dir_or_warn(trainer, "config.yaml") is not None:
            super().setup(trainer, pl_module, stage)
