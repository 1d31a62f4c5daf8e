"""``metrics.json``: the test results of a run, in one file a script can read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from mnist_lit.callbacks.outputs import run_dir
from mnist_lit.callbacks.restore_best import RestoreBestWeights
from mnist_lit.callbacks.timing import EpochTimer
from mnist_lit.data.files import atomic_write_bytes
from mnist_lit.metrics import evaluation_summary
from mnist_lit.models.base import MNISTClassifier


def _find(trainer: pl.Trainer, kind: type[Callback]) -> Any:
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)


class MetricsReport(Callback):
    """After each test, write ``<run folder>/metrics.json`` atomically.

    It holds the test loss and accuracy, the confusion matrix, the geometric and per-class metrics, the best
    epoch, the checkpoint the weights came from, and the configuration of the run.

    Args:
        filename: the file's name inside the run folder.
    """

    def __init__(self, filename: str = "metrics.json") -> None:
        self.filename = filename

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, MNISTClassifier):
            return
        folder = run_dir(trainer)
        metrics = trainer.callback_metrics
        restore = _find(trainer, RestoreBestWeights)
        timer = _find(trainer, EpochTimer)
        checkpoint = trainer.ckpt_path or getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        report: dict[str, Any] = {
            "test_loss": float(metrics["test/loss"]),
            "test_acc": float(metrics["test/acc"]),
            **evaluation_summary(pl_module.confusion_matrix("test").cpu()),
            "best_epoch": restore.best_epoch if restore is not None else None,
            "epochs_run": trainer.current_epoch,
            "seconds_per_epoch": [round(s, 3) for s in timer.epoch_seconds] if timer is not None else None,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "model": type(pl_module).__name__,
            "config": self._config(folder, trainer, pl_module),
        }
        out = folder / self.filename
        atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
        rank_zero_info(f"Wrote {out}")

    @staticmethod
    def _config(folder: Path, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The CLI's saved config.yaml when there is one, else the model's and data's hyperparameters."""
        saved = folder / "config.yaml"
        if saved.is_file():
            return yaml.safe_load(saved.read_text())
        data = getattr(trainer, "datamodule", None)
        return {
            "model": dict(pl_module.hparams),
            "data": dict(data.hparams) if data is not None else None,
        }
