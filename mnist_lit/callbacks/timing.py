"""Seconds per training epoch, logged and kept for metrics.json and the README's tables."""

from __future__ import annotations

import time

import lightning.pytorch as pl
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
