"""The benchmark's clock inside a Lightning fit: seconds of each epoch's training batches, and nothing else."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from mnist_lit.callbacks.timing import EpochClock


class TrainingPassTimer(Callback):
    """Seconds from each training epoch's start to the end of its last training batch.

    Leaves out what follows the batches (validation, epoch-end metrics, histograms), so that both Lightning sides
    time exactly what the bare loop does: one pass of training steps. On a GPU it waits for the queued work at both
    ends, so that the clock measures the work, not only its launch.
    """

    def __init__(self) -> None:
        self.clock = EpochClock()

    @property
    def seconds(self) -> list[float]:
        """Seconds of each epoch's training pass of the last fit."""
        return self.clock.seconds

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.seconds = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        wait_for_device(pl_module.device)
        self.clock.start()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 == trainer.num_training_batches:
            wait_for_device(pl_module.device)
            self.clock.stop()


def wait_for_device(device: torch.device) -> None:
    """Let queued GPU work finish before the clock is read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
