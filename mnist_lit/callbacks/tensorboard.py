"""Finding TensorBoard's SummaryWriter among the trainer's loggers."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter


def tensorboard_writer(trainer: pl.Trainer) -> SummaryWriter | None:
    """The first TensorBoardLogger's writer, or None (no logger, or Lightning fell back to CSV)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None
