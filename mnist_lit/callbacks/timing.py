"""Seconds per training epoch (logged, and kept for metrics.json and the README's tables), and per training pass."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback


class EpochTimer(Callback):
    """Wall time of each training epoch, its validation included, logged as ``time/epoch_seconds``."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_seconds = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        self.epoch_seconds.append(seconds)
        pl_module.log("time/epoch_seconds", seconds, on_step=False, on_epoch=True, sync_dist=False)


class TrainingPassTimer(Callback):
    """Seconds from each training epoch's start to the end of its last training batch.

    Leaves out what follows the batches (validation, epoch-end metrics, histograms), so that both Lightning sides
    time exactly what the bare loop does: one pass of training steps.
    """

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _wait_for_device(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 == trainer.num_training_batches:
            _wait_for_device(pl_module)
            self.seconds.append(time.perf_counter() - self._start)


def _wait_for_device(pl_module: pl.LightningModule) -> None:
    """Let queued GPU work finish, so that the clock measures it, not only its launch."""
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
