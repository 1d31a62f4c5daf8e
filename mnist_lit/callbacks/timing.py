"""Seconds per training epoch, its validation included: the run's one epoch clock, logged and kept for
``metrics.json``."""

from __future__ import annotations

import time
from typing import Any

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
    """Log each training epoch's wall time, its validation included, as ``time/epoch_seconds``, and keep them all
    (:attr:`seconds`, saved in checkpoints, so that a resumed run still has its earlier epochs')."""

    def __init__(self) -> None:
        self.clock = EpochClock()

    @property
    def seconds(self) -> list[float]:
        return self.clock.seconds

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.start()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("time/epoch_seconds", self.clock.stop(), on_step=False, on_epoch=True, sync_dist=False)

    def state_dict(self) -> dict[str, Any]:
        return {"seconds_per_epoch": list(self.clock.seconds)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.clock.seconds = list(state_dict.get("seconds_per_epoch", []))
