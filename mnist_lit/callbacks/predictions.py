"""``predict``'s output: a table on the terminal, ``predictions.csv``, and the inputs as the network saw them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from mnist_lit.callbacks.run_folder import emit_figure, require_classifier, require_datamodule, run_dir_or_warn
from mnist_lit.reporting import plots
from mnist_lit.reporting.explanations import ExplainMethod, attribute, require_captum, save_explanations
from mnist_lit.reporting.prediction_table import PredictionTable, short_name
from mnist_lit.utils.io import atomic_write_bytes

if TYPE_CHECKING:
    from mnist_lit.data.datamodule import MNISTDataModule


class PredictionWriter(BasePredictionWriter):
    """Write every prediction of ``predict`` to ``<run folder>/predictions.csv`` and print them as a table.

    It expects batches of (images, index) with the index into the data module's ``predict_names`` (which
    :class:`~mnist_lit.data.datamodule.MNISTDataModule` provides), and a model whose ``predict_step`` returns
    class probabilities (a tensor), or a dict of ``probabilities``, ``ood_score`` and ``not_digit`` as
    :meth:`MNISTClassifier.predict_step <mnist_lit.models.base.MNISTClassifier.predict_step>` does. The CSV has one
    row per input, in input order: ``path, digit, probability, top3, unsure`` (1 when the top probability is under
    the "not sure" threshold), ``not_digit`` (1 when the OOD score is above the network's threshold) and
    ``ood_score`` (higher: less like a digit) when the model gives scores, then ``label`` when the inputs' labels are
    known (the MNIST test set), then one probability column per digit, ``p0`` to ``p9``. Under DDP the rows of all
    processes are gathered, and process 0 writes them.

    Args:
        filename: the CSV file's name inside the run folder.
        top_k: how many of the most likely digits the ``top3`` column and the table list.
        max_rows: the table prints at most this many rows; the CSV always has them all.
        save_figure: also save ``figures/predictions.png``: the inputs as the network saw them (28 x 28, after
            preprocessing and normalization), each titled with its name, digit and probability.
        max_figure_images: the figure shows the first this many inputs.
        dpi: resolution of the saved figure.
        unsure_threshold: answers whose top probability is under it are "not sure"; None: the network's own
            (``unsure_threshold``, set by ``calibrate``; 0 there means never).
        explain: also save, for each of the first ``max_figure_images`` inputs,
            ``figures/explanations/<n>_<name>.<method>.png``: the image beside an attribution map of its answer
            (``ig``, ``saliency`` or ``gradcam``; see :mod:`mnist_lit.reporting.explanations`).
    """

    def __init__(
        self,
        filename: str = "predictions.csv",
        top_k: int = 3,
        max_rows: int = 50,
        save_figure: bool = True,
        max_figure_images: int = 64,
        dpi: int = 110,
        unsure_threshold: float | None = None,
        explain: ExplainMethod | None = None,
    ) -> None:
        super().__init__(write_interval="batch_and_epoch")
        self.filename = filename
        self.top_k = top_k
        self.max_rows = max_rows
        self.save_figure = save_figure
        self.max_figure_images = max_figure_images
        self.dpi = dpi
        self.unsure_threshold = unsure_threshold
        self.explain = explain
        self._rows: list[tuple[int, np.ndarray, np.ndarray | None, float]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Before any prediction: an explanation needs Captum, and the gradients of a PyTorch network."""
        if stage == "predict" and self.explain is not None:
            require_captum()
            require_classifier(self, pl_module)

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any, batch_indices: Sequence[int] | None,
        batch: Any, batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        """Keep each input's index, probabilities and, for the figure's first few inputs, the image."""
        images, index = batch[0], batch[1]
        scored = isinstance(prediction, dict)
        probs = (prediction["probabilities"] if scored else prediction).detach().float().cpu().numpy()
        scores = prediction["ood_score"].detach().float().cpu().numpy() if scored else np.full(len(probs), np.nan)
        keep_image = (self.save_figure or self.explain is not None) and bool((index < self.max_figure_images).any())
        pixels = images[:, 0].detach().float().cpu().numpy() if keep_image else None
        for i, item in enumerate(index.tolist()):
            image = pixels[i] if pixels is not None and item < self.max_figure_images else None
            self._rows.append((item, probs[i], image, float(scores[i])))

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:  # fmt: skip
        """Gather the rows of all processes and, on process 0, write the CSV, the table and the figure."""
        rows = sorted(_gather(trainer, self._rows), key=lambda row: row[0])
        self._rows = []
        if not trainer.is_global_zero or not rows:
            return
        data = require_datamodule(self, trainer)
        names, labels = data.predict_names, data.predict_labels
        scores = np.array([row[3] for row in rows])
        ood = require_classifier(self, pl_module).ood
        table = PredictionTable(
            names=[names[row[0]] if row[0] < len(names) else f"#{row[0]}" for row in rows],
            probs=np.stack([row[1] for row in rows]),
            labels=None if labels is None else [int(labels[row[0]]) for row in rows],
            top_k=self.top_k,
            unsure_threshold=self._threshold(pl_module),
            ood_scores=None if np.isnan(scores).all() else scores,
            ood_threshold=float(ood.threshold),
            ood_method=ood.method_name,
        )
        after_bar = "\n" if trainer.progress_bar_callback is not None else ""  # the bar's line is still open
        print(after_bar + table.render(self.max_rows))
        skipped = len(data.predict_skipped)
        note = f"; skipped {skipped} (reasons above)" if skipped else ""
        folder = run_dir_or_warn(trainer, self.filename)
        if folder is None:
            rank_zero_info(f"Predicted {len(rows)} inputs{note}.")
            return
        out = folder / self.filename
        atomic_write_bytes(out, table.to_csv().encode())
        rank_zero_info(f"Predicted {len(rows)} inputs{note}. Wrote {out}")
        shown = [(i, row) for i, row in enumerate(rows) if row[2] is not None][: self.max_figure_images]
        if self.save_figure and shown:
            self._save_figure(trainer, table, shown, len(rows))
        if self.explain is not None and shown:
            self._save_explanations(folder, pl_module, data, table, shown)

    def _threshold(self, pl_module: pl.LightningModule) -> float | None:
        if self.unsure_threshold is not None:
            return self.unsure_threshold
        saved = float(require_classifier(self, pl_module).unsure_threshold)  # an ONNX export's too (OnnxPredictor)
        return saved if saved > 0 else None

    def _save_explanations(
        self,
        folder: Path,
        pl_module: pl.LightningModule,
        data: MNISTDataModule,
        table: PredictionTable,
        shown: list[tuple[int, tuple]],
    ) -> None:
        """One figure per shown input: the image beside the attribution of the network's (calibrated) answer,
        integrated from a black image as the network sees one (normalized)."""
        network = require_classifier(self, pl_module)
        assert self.explain is not None
        images = torch.from_numpy(np.stack([row[2] for _, row in shown]))[:, None].to(network.device)
        black = data.normalize(torch.zeros((1, 1, *images.shape[-2:]), dtype=torch.uint8, device=network.device))
        maps, _ = attribute(network, images, self.explain, network.scaled_logits, black)
        written = save_explanations(
            folder / "figures" / "explanations",
            stems=[f"{row[0]:05d}_{Path(table.names[i]).name}" for i, row in shown],
            images=np.stack([row[2] for _, row in shown]),
            maps=maps,
            titles=[
                f"{short_name(Path(table.names[i]).name, 40)}: {table.answer(i)} (p = {table.confidence[i]:.3f})"
                for i, _ in shown
            ],
            method=self.explain,
            dpi=self.dpi,
        )
        rank_zero_info(f"Wrote {len(written)} explanations ({self.explain}) to {folder / 'figures' / 'explanations'}")

    def _save_figure(
        self, trainer: pl.Trainer, table: PredictionTable, shown: list[tuple[int, tuple]], total: int
    ) -> None:
        answers = ["not a digit" if table.not_digit[i] else table.digits[i] for i, _ in shown]
        titles = [
            f"{short_name(Path(table.names[i]).name)}\n{answer} ({table.confidence[i]:.0%})"
            for (i, _), answer in zip(shown, answers, strict=True)
        ]
        images = np.stack([row[2] for _, row in shown])
        first = f"the first {len(shown)} of {total} " if len(shown) < total else ""
        fig = plots.image_grid(images, titles, f"Predictions for {first}inputs, as the network saw them (28x28)")
        out = emit_figure(trainer, "predictions", fig, self.dpi)
        rank_zero_info(f"Wrote {out}")


def _gather(trainer: pl.Trainer, rows: list) -> list:
    """All processes' rows (each process predicted its own shard), or just these when there is one process."""
    if trainer.world_size == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, rows)
    return [row for part in gathered for row in part]
