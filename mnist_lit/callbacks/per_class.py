"""Notebook B's confusion-matrix view of a run: per-class metrics in TensorBoard, the commonest confusions printed."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from mnist_lit.callbacks.run_folder import require_classifier, tensorboard_writer


class PerClassMetrics(Callback):
    """Write what the module's evaluation says beyond its logged scalars, for val and test.

    The module computes each epoch's evaluation once (:meth:`MNISTClassifier._evaluate`) and logs notebook B's
    geometric errors (trace accuracy, MAE, MSE, off-diagonal mass) itself; this callback adds the per-class precision
    and recall to TensorBoard (``<stage>_per_class/...``), and after a test prints the geometric errors with the most
    frequent confusions as (true, predicted, count).
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_classifier(self, pl_module)

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log_per_class(trainer, "val", pl_module)

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        summary = self._log_per_class(trainer, "test", pl_module)
        if summary is None:
            return
        g = summary["geometric"]
        confusions = ", ".join(f"{c['true']}->{c['predicted']} x{c['count']}" for c in summary["top_confusions"])
        rank_zero_info(
            f"Test confusion matrix over {summary['num_samples']} images: trace accuracy {g['trace_accuracy']:.4f}, "
            f"MAE {g['mae']:.4f}, MSE {g['mse']:.4f}, off-diagonal mass {g['off_diagonal_mass']:.4f}; "
            f"most frequent confusions (true->predicted): {confusions or 'none'}"
        )

    def _log_per_class(self, trainer: pl.Trainer, stage: str, pl_module: pl.LightningModule) -> dict | None:
        """Per-class values go straight to TensorBoard: 20 more rows would swamp the printed test table."""
        summary = require_classifier(self, pl_module).evaluations.get(stage)
        writer = tensorboard_writer(trainer)
        if summary is None or writer is None:
            return summary
        for kind, values in summary["per_class"].items():
            for digit, value in enumerate(values):
                writer.add_scalar(f"{stage}_per_class/{kind}_{digit}", value, global_step=trainer.global_step)
        return summary
