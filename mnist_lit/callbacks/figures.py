"""The notebooks' figures, saved as PNG in the run's folder and logged to TensorBoard."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from mnist_lit.callbacks.run_folder import best_checkpoint, emit_figure, require_classifier
from mnist_lit.reporting import plots


class ReportFigures(Callback):
    """Sample training images, loss/accuracy curves, the test confusion matrix and reliability diagram, test
    predictions, mistakes.

    Figures go to ``<run folder>/figures/*.png`` and, when a TensorBoardLogger is attached, to its Images tab
    under ``figures/``. Test samples are drawn on process 0 from its own share of the test set.

    Args:
        num_images: images in each grid.
        seed: seeds the choice of the sample and random-prediction images.
        dpi: resolution of the saved PNG files.
    """

    def __init__(self, num_images: int = 24, seed: int = 0, dpi: int = 110) -> None:
        self.num_images = num_images
        self.seed = seed
        self.dpi = dpi
        self.history: dict[str, dict[int, float]] = defaultdict(dict)  # metric -> {epoch: value}
        self._reset_test_samples()

    def _reset_test_samples(self) -> None:
        self._rng = random.Random(self.seed)
        self._seen = 0
        self._random: list[tuple[np.ndarray, int, int, float]] = []
        self._mistakes: list[tuple[np.ndarray, int, int, float]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_classifier(self, pl_module)

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A grid of training images with their labels, as both notebooks show first; with augmentation on, the same
        images again as one draw of the random transforms moves them."""
        if trainer.ckpt_path is None:  # a resumed fit keeps the curves' earlier epochs (see load_state_dict)
            self.history.clear()
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector
        dataset = getattr(datamodule, "data_train", None)
        if dataset is None:
            return
        generator = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(dataset), generator=generator)[: self.num_images]
        images, labels = dataset.images[idx].cpu().numpy(), dataset.labels[idx].tolist()  # may live on a GPU
        titles = [f"label {y}" for y in labels]
        emit_figure(trainer, "train_samples", plots.image_grid(images, titles, "Training images"), self.dpi)
        if getattr(datamodule, "augmentation", None) is not None:
            moved = datamodule.augment(dataset.images[idx].unsqueeze(1), generator)[:, 0].cpu().numpy()
            fig = plots.image_grid(moved, titles, f"Augmented training images ({datamodule.augmentation})")
            emit_figure(trainer, "augmented_samples", fig, self.dpi)

    def _record(self, trainer: pl.Trainer, stage: str) -> None:
        for name in ("loss", "acc"):
            value = trainer.callback_metrics.get(f"{stage}/{name}")
            if value is not None:
                self.history[f"{stage}/{name}"][trainer.current_epoch] = float(value)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the epoch's training loss and accuracy for the curves."""
        self._record(trainer, "train")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the epoch's validation loss and accuracy, only for epochs that did validate."""
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._record(trainer, "val")

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Loss and accuracy curves per epoch, train beside val, the best checkpoint's epoch marked."""
        if not self.history:
            return
        best = best_checkpoint(trainer).get("best_epoch")
        emit_figure(trainer, "training_curves", plots.training_curves(self.history, best_epoch=best), self.dpi)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start a new draw of test samples."""
        self._reset_test_samples()

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        """Keep the first misclassified images, and a uniform random draw of all of them, on process 0."""
        if not trainer.is_global_zero or not isinstance(outputs, dict):
            return
        images, labels = batch
        probs = outputs["logits"].float().softmax(dim=1)
        conf, preds = probs.max(dim=1)
        images, labels, preds, conf = images[:, 0].float().cpu(), labels.cpu(), preds.cpu(), conf.cpu()
        wrong = torch.nonzero(preds != labels).flatten().tolist()
        for i in wrong[: max(0, self.num_images - len(self._mistakes))]:
            self._mistakes.append(self._sample(images, labels, preds, conf, i))
        for i in range(len(labels)):  # reservoir sampling: a uniform draw from the whole (local) test set
            slot = self._seen if self._seen < self.num_images else self._rng.randrange(self._seen + 1)
            self._seen += 1
            if slot < self.num_images:
                sample = self._sample(images, labels, preds, conf, i)
                if slot == len(self._random):
                    self._random.append(sample)
                else:
                    self._random[slot] = sample

    @staticmethod
    def _sample(images: Tensor, labels: Tensor, preds: Tensor, conf: Tensor, i: int) -> tuple:
        """One image (a copy: a view would keep its whole batch alive until the figures are drawn) and its numbers."""
        return images[i].numpy().copy(), int(labels[i]), int(preds[i]), float(conf[i])

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The module's test confusion matrix (summed over all processes), then the grids of process 0's samples."""
        network = require_classifier(self, pl_module)
        if "test" in network.evaluations:
            evaluation = network.evaluation("test")
            cm = np.array(evaluation["confusion_matrix"])
            emit_figure(trainer, "confusion_matrix", plots.confusion_heatmap(cm, "Test confusion matrix"), self.dpi)
            calibration = evaluation["calibration"]
            title = f"Test reliability diagram (T = {calibration['temperature']:.3g}, {int(cm.sum())} images)"
            emit_figure(trainer, "reliability", plots.reliability_diagram(calibration, title), self.dpi)
        if self._random:
            images, titles, colors = self._grid(self._random, with_confidence=False)
            fig = plots.image_grid(images, titles, "Random test images: true / predicted", title_colors=colors)
            emit_figure(trainer, "test_predictions", fig, self.dpi)
        if self._mistakes:
            images, titles, colors = self._grid(self._mistakes, with_confidence=True)
            fig = plots.image_grid(
                images, titles, "Misclassified test images: true / predicted (confidence)", title_colors=colors
            )
            emit_figure(trainer, "misclassified", fig, self.dpi)

    @staticmethod
    def _grid(samples: list[tuple], with_confidence: bool) -> tuple[np.ndarray, list[str], list[str]]:
        images = np.stack([s[0] for s in samples])
        titles = [f"{t} / {p}" + (f" ({c:.0%})" if with_confidence else "") for _, t, p, c in samples]
        colors = ["black" if t == p else "red" for _, t, p, _ in samples]
        return images, titles, colors

    def state_dict(self) -> dict[str, Any]:
        """The curves' values so far, so that a resumed run's figure shows every epoch."""
        return {"history": {metric: dict(values) for metric, values in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = defaultdict(dict, {k: dict(v) for k, v in state_dict.get("history", {}).items()})
