"""The progress bar of the command line: tqdm's in a terminal, one line per epoch in a log file."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

#: Steps between redraws of the default progress bar. Lightning's default, 1, redraws it every step, which costs a
#: measurable share of a small network's step (see the benchmark page) for redraws no one reads.
PROGRESS_BAR_REFRESH_RATE = 10


def default_progress_bar() -> ProgressBar:
    """A tqdm bar in a terminal; one line per epoch when standard output is a file or a pipe (tqdm writes there)."""
    if sys.stdout.isatty():
        return TQDMProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE)
    return EpochLineProgress()


class EpochLineProgress(ProgressBar):
    """Print one line at each training epoch's end: its number, its seconds and the epoch's logged metrics.

    The command line uses it in place of the tqdm bar when standard output is not a terminal (``fit ... > run.log``,
    CI, ``nohup``): a redrawn bar becomes a dozen lines per epoch in a file, and its validation bar more.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        shown = "  ".join(f"{name} {_format(value)}" for name, value in metrics.items())
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        seconds = time.perf_counter() - self._start
        print(f"Epoch {trainer.current_epoch + 1}{epochs} ({seconds:.1f} s)  {shown}", file=sys.stdout, flush=True)


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
