"""``metrics.json``: the test results of a run, in one file a script can read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from mnist_lit.callbacks.ood import OODReport
from mnist_lit.callbacks.run_folder import best_checkpoint, require_classifier, run_dir_or_warn
from mnist_lit.callbacks.timing import EpochClock
from mnist_lit.utils.io import atomic_write_bytes


class MetricsReport(Callback):
    """After each test, write ``<run folder>/metrics.json`` atomically.

    It holds the test loss and accuracy, the module's evaluation of the test set (confusion matrix, geometric and
    per-class metrics, top confusions, ``calibration``: the reliability bins, ECE and MCE at the network's
    temperature: the numbers the figures and TensorBoard show), ``val_calibration`` (the same for the latest
    validation epoch of this process, if any), ``temperature_scaling`` (after ``fit --calibrate``), where the weights
    came from (a checkpoint, or the model in memory right after ``fit``), and the configuration of the run as used.
    After a ``fit`` in the same process it adds what Lightning knows of the fit (epochs run, the best checkpoint,
    its monitored score and epoch) and the seconds each epoch took.

    Args:
        filename: the file's name inside the run folder.
    """

    def __init__(self, filename: str = "metrics.json") -> None:
        self.filename = filename
        self.clock = EpochClock()
        self._fitted = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_classifier(self, pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fitted = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.start()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.stop()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the file on process 0 from the evaluation the module computed once, on every process."""
        network = require_classifier(self, pl_module)
        if not trainer.is_global_zero or "test" not in network.evaluations:
            return
        folder = run_dir_or_warn(trainer, self.filename)
        if folder is None:
            return
        metrics = trainer.callback_metrics
        report: dict[str, Any] = {
            "test_loss": float(metrics["test/loss"]),
            "test_acc": float(metrics["test/acc"]),
            **network.evaluation("test"),
            "val_calibration": network.evaluations.get("val", {}).get("calibration"),
            "weights": str(trainer.ckpt_path) if trainer.ckpt_path else "the model in memory at the end of fit",
            "model": type(pl_module).__name__,
            "config": self._config(folder, trainer, pl_module),
        }
        if pl_module.calibration_fit is not None:
            report["temperature_scaling"] = pl_module.calibration_fit
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by a connector
        ood = next((c.result for c in callbacks if isinstance(c, OODReport) and c.result), None)
        if ood is not None:
            report["ood"] = ood
        if self._fitted and not trainer.ckpt_path:
            report.update(
                epochs_run=trainer.current_epoch,
                **best_checkpoint(trainer),
                seconds_per_epoch=[round(s, 3) for s in self.clock.seconds],
            )
        out = folder / self.filename
        atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
        rank_zero_info(f"Wrote {out}")

    @staticmethod
    def _config(folder: Path, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The CLI's saved config.yaml (else the model's and data's hyperparameters), with the normalization that
        was used: a checkpoint's own wins over the configured one."""
        saved = folder / "config.yaml"
        data = getattr(trainer, "datamodule", None)
        if saved.is_file():
            config = yaml.safe_load(saved.read_text())
        else:
            config = {"model": dict(pl_module.hparams), "data": dict(data.hparams) if data is not None else None}
        used = getattr(data, "normalization", None)
        if used is not None and isinstance(config.get("data"), dict):
            config["data"]["normalization"] = used
        return config

    def state_dict(self) -> dict[str, Any]:
        """The epochs' durations, so that a resumed run's ``metrics.json`` lists every epoch of the run."""
        return {"seconds_per_epoch": list(self.clock.seconds)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.clock.seconds = list(state_dict.get("seconds_per_epoch", []))
