"""Notebook B's ``TensorBoard(histogram_freq=1)``: every layer's weights and biases as histograms."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from mnist_lit.callbacks.run_folder import tensorboard_writer


class WeightHistograms(Callback):
    """Log a histogram of each parameter tensor to TensorBoard every ``every_n_epochs`` epochs (0: never)."""

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs <= 0 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            rank_zero_warn("WeightHistograms needs a TensorBoardLogger (is tensorboard installed?); skipping.")
            return
        for name, param in pl_module.named_parameters():
            writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), global_step=trainer.global_step)
