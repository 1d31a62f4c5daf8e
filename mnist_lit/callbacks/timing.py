"""Seconds per training epoch, its validation included: logged, and kept for ``metrics.json``."""

from __future__ import annotations

import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class EpochClock:
    """Wall time of each training epoch: :meth:`start` at its start, :meth:`stop` at its end."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> float:
        """Record and return the seconds since :meth:`start`."""
        self.seconds.append(time.perf_counter() - self._start)
        return self.seconds[-1]


class EpochTimer(Callback):
    """Log each training epoch's wall time, its validation included, as ``time/epoch_seconds``."""

    def __init__(self) -> None:
        self.clock = EpochClock()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.start()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("time/epoch_seconds", self.clock.stop(), on_step=False, on_epoch=True, sync_dist=False)
