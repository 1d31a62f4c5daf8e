"""The benchmark's clocks inside a Lightning fit: seconds of each epoch's training batches, and the moments of a
whole command's phases."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
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


class PhaseClock(Callback):
    """Wall-clock moments of a ``fit`` command, for the fixed-cost table: when the callbacks were built, the data
    was ready, the first and last training steps ran, and the test began and ended.

    ``python -m mnist_lit fit ... --trainer.callbacks+=bench_timing.PhaseClock`` with ``benchmarks`` on the
    ``PYTHONPATH`` adds it; it writes the moments (seconds since the epoch, ``time.time()``) as JSON to the file
    that ``$MNIST_LIT_PHASES`` names, after each one, so the file holds all of them once the process exits.
    """

    def __init__(self) -> None:
        self.moments: dict[str, float] = {}
        self._mark("built")

    def _mark(self, name: str) -> None:
        self.moments.setdefault(name, time.time())
        Path(os.environ["MNIST_LIT_PHASES"]).write_text(json.dumps(self.moments))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._mark(f"{getattr(stage, 'value', stage)}_data_ready")  # Lightning passes its TrainerFn enum

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self._mark("first_step")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        wait_for_device(pl_module.device)
        self._mark("last_step_done")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._mark(f"{getattr(stage, 'value', stage)}_done")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark("test_start")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark("test_end")
