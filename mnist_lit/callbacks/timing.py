"""Seconds per training epoch (logged, and kept for metrics.json and the README's tables), and per training pass."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback


class _EpochStopwatch(Callback):
    """A clock started at each training epoch's start; subclasses stop it where their measurement ends."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def _stop(self) -> float:
        """Record and return the seconds since the epoch started."""
        self.seconds.append(time.perf_counter() - self._start)
        return self.seconds[-1]


class EpochTimer(_EpochStopwatch):
    """Wall time of each training epoch, its validation included, logged as ``time/epoch_seconds``."""

    @property
    def epoch_seconds(self) -> list[float]:
        """Seconds of each epoch of the last fit."""
        return self.seconds

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("time/epoch_seconds", self._stop(), on_step=False, on_epoch=True, sync_dist=False)


class TrainingPassTimer(_EpochStopwatch):
    """Seconds from each training epoch's start to the end of its last training batch.

    Leaves out what follows the batches (validation, epoch-end metrics, histograms), so that both Lightning sides
    time exactly what the bare loop does: one pass of training steps. On a GPU it waits for the queued work at both
    ends, so that the clock measures the work, not only its launch.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _wait_for_device(pl_module)
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 == trainer.num_training_batches:
            _wait_for_device(pl_module)
            self._stop()


def _wait_for_device(pl_module: pl.LightningModule) -> None:
    """Let queued GPU work finish before the clock is read."""
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
