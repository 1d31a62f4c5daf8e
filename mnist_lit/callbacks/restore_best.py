"""Keras' ``EarlyStopping(restore_best_weights=True)`` semantics, which Lightning does not have (#1395, #1415)."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor


class RestoreBestWeights(Callback):
    """Keep a copy of the weights of the best epoch, and put them back in the model when fit ends.

    Unlike ``ckpt_path="best"`` this needs no checkpoint on disk, so the model in memory (what ``test`` after
    ``fit``, the figures and any later code see) always holds the best epoch's weights, on every process.

    Args:
        monitor: the logged validation metric to watch.
        mode: ``min`` or ``max``.
    """

    def __init__(self, monitor: str = "val/loss", mode: Literal["min", "max"] = "min") -> None:
        self.monitor = monitor
        self.mode = mode
        self.best_score = math.inf if mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self._best_weights: dict[str, Tensor] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Forget any earlier fit's best, unless this fit resumes from a checkpoint that restored ours."""
        if trainer.ckpt_path is None:
            self.best_score = math.inf if self.mode == "min" else -math.inf
            self.best_epoch, self._best_weights = None, None

    def _improved(self, score: float) -> bool:
        return score < self.best_score if self.mode == "min" else score > self.best_score

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After each validation in fit: copy the weights (to CPU memory) when the monitored value improved."""
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            rank_zero_warn(f"RestoreBestWeights: `{self.monitor}` was not logged; no weights are kept.")
            return
        score = float(value)
        if self._improved(score):
            self.best_score, self.best_epoch = score, trainer.current_epoch
            self._best_weights = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Put the best epoch's weights back into the model."""
        if self._best_weights is None or self.best_epoch is None:
            return
        pl_module.load_state_dict(self._best_weights)
        rank_zero_info(
            f"Restored the weights of epoch {self.best_epoch + 1} of {trainer.current_epoch}, counted from 1 "
            f"(best {self.monitor} = {self.best_score:.4f})."
        )

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints with the best weights themselves, so a resumed fit can still restore them."""
        return {
            "monitor": self.monitor,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_weights": self._best_weights,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score", self.best_score)
        self.best_epoch = state_dict.get("best_epoch", self.best_epoch)
        self._best_weights = state_dict.get("best_weights", self._best_weights)
