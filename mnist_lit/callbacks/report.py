"""``metrics.json``: the test results of a run, in one file a script can read."""

from __future__ import annotations

import copy
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from mnist_lit.callbacks.ood import OODReport
from mnist_lit.callbacks.run_folder import best_checkpoint, require_classifier, require_datamodule, run_dir_or_warn
from mnist_lit.callbacks.timing import EpochTimer
from mnist_lit.utils.io import atomic_write_json


class MetricsReport(Callback):
    """After each test, write ``<run folder>/metrics.json`` atomically.

    It holds the test loss and accuracy, the module's evaluation of the test set (confusion matrix, geometric and
    per-class metrics, top confusions, ``calibration``: the reliability bins, ECE and MCE at the network's
    temperature: the numbers the figures and TensorBoard show), ``val_calibration`` (the same for the latest
    validation epoch of this process, if any), ``temperature_scaling`` (after ``fit --calibrate``), where the weights
    came from (a checkpoint, or the model in memory right after ``fit``), and the configuration of the run as used.
    After a ``fit`` in the same process it adds what Lightning knows of the fit (epochs run, the best checkpoint,
    its monitored score and epoch) and the seconds each epoch took (from the run's
    :class:`~mnist_lit.callbacks.timing.EpochTimer`).

    Args:
        filename: the file's name inside the run folder.
    """

    def __init__(self, filename: str = "metrics.json") -> None:
        self.filename = filename
        self._fitted = False
        self._run_config: dict[str, Any] | None = None
        self._timer: EpochTimer | None = None

    def use_run(self, config: dict[str, Any], timer: EpochTimer | None) -> None:
        """What the command line hands the report: the run's configuration as it parsed it (what it saves as
        ``config.yaml``; without it, the report holds the network's and the data module's hyperparameters), and the
        run's epoch clock (without it, no seconds per epoch)."""
        self._run_config, self._timer = config, timer

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_classifier(self, pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fitted = True

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the file on process 0 from the evaluation the module computed once, on every process."""
        network = require_classifier(self, pl_module)
        if not trainer.is_global_zero or "test" not in network.evaluations:
            return
        folder = run_dir_or_warn(trainer, self.filename)
        if folder is None:
            return
        metrics = trainer.callback_metrics
        val = network.evaluations.get("val")
        report: dict[str, Any] = {
            "test_loss": float(metrics["test/loss"]),
            "test_acc": float(metrics["test/acc"]),
            **network.evaluation("test").as_dict(),
            "val_calibration": val.calibration if val is not None else None,
            "weights": str(trainer.ckpt_path) if trainer.ckpt_path else "the model in memory at the end of fit",
            "model": type(pl_module).__name__,
            "config": self._config(trainer, network),
        }
        if network.calibration_fit is not None:
            report["temperature_scaling"] = network.calibration_fit
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by a connector
        ood = next((c.result for c in callbacks if isinstance(c, OODReport) and c.result), None)
        if ood is not None:
            report["ood"] = ood
        if self._fitted and not trainer.ckpt_path:
            report.update(
                epochs_run=trainer.current_epoch,
                **best_checkpoint(trainer),
                **({} if self._timer is None else {"seconds_per_epoch": [round(s, 3) for s in self._timer.seconds]}),
            )
        out = folder / self.filename
        atomic_write_json(out, report)
        rank_zero_info(f"Wrote {out}")

    def _config(self, trainer: pl.Trainer, network: pl.LightningModule) -> dict[str, Any]:
        """The run's configuration (else the model's and data's hyperparameters), with the normalization that was
        used: a checkpoint's own wins over the configured one."""
        data = require_datamodule(self, trainer)
        if self._run_config is not None:
            config = copy.deepcopy(self._run_config)
        else:
            config = {"model": dict(network.hparams), "data": dict(data.hparams)}
        if isinstance(config.get("data"), dict):
            config["data"]["normalization"] = data.normalization
        return config
