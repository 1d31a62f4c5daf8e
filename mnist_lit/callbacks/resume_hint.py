"""What to type to continue a ``fit`` that Ctrl-C or SIGTERM stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class ResumeHint(Callback):
    """When ``fit`` is stopped by Ctrl-C or SIGTERM, say which checkpoint holds the last finished epoch and how to
    continue from it. Lightning stops at the next batch; the epoch under way is replayed from its start on resume.

    The epoch that ``last.ckpt`` holds is the one of the latest checkpoint this process saved, or, before the first,
    of the checkpoint the fit resumed from: both pass through this callback's hooks, so nothing is read back from disk.

    Args:
        configs: the ``--config`` files of the run, repeated in the command it prints.
    """

    def __init__(self, configs: list[str]) -> None:
        self.configs = configs
        self.saved_epoch: int | None = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self.saved_epoch = int(checkpoint["epoch"])

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self.saved_epoch = int(checkpoint["epoch"])

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        checkpoint = trainer.checkpoint_callback
        saved = checkpoint.last_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        last = Path(saved) if saved else None
        if last is None or not last.is_file() or self.saved_epoch is None:
            rank_zero_info("Stopped before the first epoch finished: there is no checkpoint to continue from.")
            return
        configs = " ".join(f"--config {c}" for c in self.configs)
        rank_zero_info(
            f"Stopped during epoch {trainer.current_epoch} (counted from 0). {last} holds the end of epoch "
            f"{self.saved_epoch}; continue the run, in the same folder, with the same options and:\n"
            f"  python -m mnist_lit fit {configs} --ckpt_path {last}"
        )
