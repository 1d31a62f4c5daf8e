"""The run's checkpoints: Lightning's ModelCheckpoint, which also remembers the epoch of its best checkpoint."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """:class:`~lightning.pytorch.callbacks.ModelCheckpoint` (same options, same state in checkpoints) that keeps the
    epoch (from 0) of its best checkpoint as :attr:`best_epoch`, for the curves and ``metrics.json``: Lightning keeps
    the best file's path and score, and reading its epoch back would mean loading the whole checkpoint."""

    #: The epoch at which ``best_model_path`` was written; None before the first checkpoint.
    best_epoch: int | None = None
    _seen_best: str = ""

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's own key, so that checkpoints written with either resume with the other."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def _note_best(self, trainer: pl.Trainer) -> None:
        if self.best_model_path and self.best_model_path != self._seen_best:
            self._seen_best, self.best_epoch = self.best_model_path, trainer.current_epoch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        self._note_best(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._note_best(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._note_best(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self.best_model_path == state_dict.get("best_model_path"):
            self._seen_best, self.best_epoch = self.best_model_path, state_dict.get("best_epoch")
