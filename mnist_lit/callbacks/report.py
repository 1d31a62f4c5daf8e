"""``metrics.json``: the test results of a run, in one file a script can read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from mnist_lit.atomic import atomic_write_bytes
from mnist_lit.callbacks.outputs import find_callback, run_dir_or_warn
from mnist_lit.callbacks.restore_best import RestoreBestWeights
from mnist_lit.callbacks.timing import EpochTimer
from mnist_lit.metrics import evaluation_summary
from mnist_lit.models.base import MNISTClassifier


class MetricsReport(Callback):
    """After each test, write ``<run folder>/metrics.json`` atomically.

    It holds the test loss and accuracy, the confusion matrix, the geometric and per-class metrics, where the
    weights came from (a checkpoint, or the model in memory right after ``fit``), the best epoch, the epochs
    run and their durations (after a ``fit`` in the same process), and the configuration of the run.

    Args:
        filename: the file's name inside the run folder.
    """

    def __init__(self, filename: str = "metrics.json") -> None:
        self.filename = filename

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Gather the matrix on every process (a collective call), then write the file on process 0."""
        if not isinstance(pl_module, MNISTClassifier):
            return
        cm = pl_module.confusion_matrix("test").cpu()
        folder = run_dir_or_warn(trainer, self.filename) if trainer.is_global_zero else None
        if folder is None:
            return
        metrics = trainer.callback_metrics
        restore = find_callback(trainer, RestoreBestWeights)
        timer = find_callback(trainer, EpochTimer)
        trained_here = timer is not None and bool(timer.epoch_seconds)
        checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        report: dict[str, Any] = {
            "test_loss": float(metrics["test/loss"]),
            "test_acc": float(metrics["test/acc"]),
            **evaluation_summary(cm),
            "weights": str(trainer.ckpt_path) if trainer.ckpt_path else "the model in memory at the end of fit",
            "best_epoch": restore.best_epoch if restore is not None else None,
            "best_checkpoint": checkpoint if trained_here else None,
            "epochs_run": len(timer.epoch_seconds) if trained_here else None,
            "seconds_per_epoch": [round(s, 3) for s in timer.epoch_seconds] if trained_here else None,
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
        return {"model": dict(pl_module.hparams), "data": dict(data.hparams) if data is not None else None}
