"""Where a run's outputs go: its folder, and TensorBoard's SummaryWriter among the trainer's loggers."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter


def run_dir(trainer: pl.Trainer) -> Path:
    """The run's folder (``lightning_logs/<name>/version_N``), as ``Trainer.log_dir`` finds it.

    ``Trainer.log_dir`` broadcasts its answer from rank 0, a collective call that hangs when only rank 0 asks,
    as it does in the rank-zero-only hooks that write files; this reads the same value locally.
    """
    if trainer.loggers:
        logger = trainer.loggers[0]
        path = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
        if path is not None:
            return Path(path)
    return Path(trainer.default_root_dir)


def tensorboard_writer(trainer: pl.Trainer) -> SummaryWriter | None:
    """The first TensorBoardLogger's writer, or None (no logger, or Lightning fell back to CSV)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None
