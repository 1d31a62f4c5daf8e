"""Notebook B's geometric errors, and per-class metrics, logged from each val and test confusion matrix."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from mnist_lit.callbacks.outputs import tensorboard_writer
from mnist_lit.metrics import evaluation_summary
from mnist_lit.models.base import MNISTClassifier


class GeometricErrorCallback(Callback):
    """Log trace accuracy, MAE, MSE, off-diagonal mass, per-class precision and recall for val and test.

    It reads the epoch's confusion matrix from the module's torchmetrics ``MulticlassConfusionMatrix``, already
    summed over all processes, so every rank logs the same exact numbers. After a test, the most frequent
    confusions are printed as (true, predicted, count).

    Args:
        top_k: how many of the most frequent confusions to report.
    """

    def __init__(self, top_k: int = 5) -> None:
        self.top_k = top_k

    def _log(self, stage: str, pl_module: pl.LightningModule) -> dict:
        if not isinstance(pl_module, MNISTClassifier):
            raise TypeError("GeometricErrorCallback needs an MNISTClassifier, which keeps the confusion matrices")
        summary = evaluation_summary(pl_module.confusion_matrix(stage).cpu(), self.top_k)
        metrics = {f"{stage}/{name}": value for name, value in summary["geometric"].items()}
        pl_module.log_dict(metrics, on_epoch=True, sync_dist=False)
        self._log_per_class(pl_module.trainer, stage, summary["per_class"])
        return summary

    @staticmethod
    @rank_zero_only
    def _log_per_class(trainer: pl.Trainer, stage: str, per_class: dict[str, list[float]]) -> None:
        """Per-class values go straight to TensorBoard: 20 more rows would swamp the printed test table."""
        writer = tensorboard_writer(trainer)
        if writer is None or trainer.sanity_checking:
            return
        for kind, values in per_class.items():
            for digit, value in enumerate(values):
                writer.add_scalar(f"{stage}_per_class/{kind}_{digit}", value, global_step=trainer.global_step)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log("val", pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        summary = self._log("test", pl_module)
        g = summary["geometric"]
        confusions = ", ".join(f"{c['true']}->{c['predicted']} x{c['count']}" for c in summary["top_confusions"])
        rank_zero_info(
            f"Test confusion matrix over {summary['num_samples']} images: trace accuracy {g['trace_accuracy']:.4f}, "
            f"MAE {g['mae']:.4f}, MSE {g['mse']:.4f}, off-diagonal mass {g['off_diagonal_mass']:.4f}; "
            f"most frequent confusions (true->predicted): {confusions or 'none'}"
        )
