"""``predict``'s output: a table on the terminal, ``predictions.csv``, and the inputs as the network saw them."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from mnist_lit import plots
from mnist_lit.atomic import atomic_write_bytes
from mnist_lit.callbacks.outputs import emit_figure, run_dir_or_warn


class PredictionWriter(BasePredictionWriter):
    """Write every prediction of ``predict`` to ``<run folder>/predictions.csv`` and print them as a table.

    It expects batches of (images, index) with the index into the data module's ``predict_names`` (which
    :class:`~mnist_lit.data.datamodule.MNISTDataModule` provides), and a model whose ``predict_step`` returns
    class probabilities. The CSV has one row per input, in input order: ``path, digit, probability, top3``, then
    ``label`` when the inputs' labels are known (the MNIST test set), then one probability column per digit,
    ``p0`` to ``p9``. Under DDP the rows of all processes are gathered, and process 0 writes them.

    Args:
        filename: the CSV file's name inside the run folder.
        top_k: how many of the most likely digits the ``top3`` column and the table list.
        max_rows: the table prints at most this many rows; the CSV always has them all.
        save_figure: also save ``figures/predictions.png``: the inputs as the network saw them (28 x 28, after
            preprocessing and normalization), each titled with its name, digit and probability.
        max_figure_images: the figure shows the first this many inputs.
        dpi: resolution of the saved figure.
    """

    def __init__(
        self,
        filename: str = "predictions.csv",
        top_k: int = 3,
        max_rows: int = 50,
        save_figure: bool = True,
        max_figure_images: int = 64,
        dpi: int = 110,
    ) -> None:
        super().__init__(write_interval="batch_and_epoch")
        self.filename = filename
        self.top_k = top_k
        self.max_rows = max_rows
        self.save_figure = save_figure
        self.max_figure_images = max_figure_images
        self.dpi = dpi
        self._rows: list[tuple[int, np.ndarray, np.ndarray | None]] = []

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any, batch_indices: Sequence[int] | None,
        batch: Any, batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        """Keep each input's index, probabilities and, for the figure's first few inputs, the image."""
        images, index = batch[0], batch[1]
        probs = prediction.detach().float().cpu().numpy()
        keep_image = self.save_figure and bool((index < self.max_figure_images).any())
        pixels = images[:, 0].detach().float().cpu().numpy() if keep_image else None
        for i, item in enumerate(index.tolist()):
            image = pixels[i] if pixels is not None and item < self.max_figure_images else None
            self._rows.append((item, probs[i], image))

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:  # fmt: skip
        """Gather the rows of all processes and, on process 0, write the CSV, the table and the figure."""
        rows = sorted(_gather(trainer, self._rows), key=lambda row: row[0])
        self._rows = []
        if not trainer.is_global_zero or not rows:
            return
        data = getattr(trainer, "datamodule", None)
        names = list(getattr(data, "predict_names", None) or [])
        labels = getattr(data, "predict_labels", None)
        table = PredictionTable(
            names=[names[i] if i < len(names) else f"#{i}" for i, _, _ in rows],
            probs=np.stack([p for _, p, _ in rows]),
            labels=None if labels is None else [int(labels[i]) for i, _, _ in rows],
            top_k=self.top_k,
        )
        after_bar = "\n" if trainer.progress_bar_callback is not None else ""  # the bar's line is still open
        print(after_bar + table.render(self.max_rows))
        skipped = len(getattr(data, "predict_skipped", None) or [])
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

    def _save_figure(
        self, trainer: pl.Trainer, table: PredictionTable, shown: list[tuple[int, tuple]], total: int
    ) -> None:
        titles = [
            f"{_short(Path(table.names[i]).name)}\n{table.digits[i]} ({table.confidence[i]:.0%})" for i, _ in shown
        ]
        images = np.stack([row[2] for _, row in shown])
        first = f"the first {len(shown)} of {total} " if len(shown) < total else ""
        fig = plots.image_grid(images, titles, f"Predictions for {first}inputs, as the network saw them (28x28)")
        out = emit_figure(trainer, "predictions", fig, self.dpi)
        rank_zero_info(f"Wrote {out}")


class PredictionTable:
    """Probabilities of N inputs over the 10 digits, with their names, as a CSV file or a printed table."""

    def __init__(self, names: list[str], probs: np.ndarray, labels: list[int] | None = None, top_k: int = 3) -> None:
        if len(names) != len(probs) or (labels is not None and len(labels) != len(names)):
            raise ValueError(f"{len(names)} names, {len(probs)} probability rows and labels do not match")
        self.names = names
        self.probs = probs
        self.labels = labels
        self.ranked = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        self.digits = self.ranked[:, 0].tolist()
        self.confidence = probs[np.arange(len(probs)), self.ranked[:, 0]].tolist()

    def top(self, i: int, digits: int = 4) -> str:
        """The ``top_k`` most likely digits of input ``i``, as ``7:0.9812 1:0.0120 9:0.0031``."""
        return " ".join(f"{d}:{self.probs[i, d]:.{digits}f}" for d in self.ranked[i])

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        label_column = ["label"] if self.labels is not None else []
        writer.writerow(["path", "digit", "probability", "top3", *label_column, *(f"p{d}" for d in range(10))])
        for i, name in enumerate(self.names):
            label = [self.labels[i]] if self.labels is not None else []
            probs = (f"{p:.6f}" for p in self.probs[i])
            writer.writerow([name, self.digits[i], f"{self.confidence[i]:.6f}", self.top(i), *label, *probs])
        return buffer.getvalue()

    def render(self, max_rows: int = 50) -> str:
        """A fixed-width table of the first ``max_rows`` inputs: path, digit, probability, top 3."""
        shown = [_short(name, 60) for name in self.names[:max_rows]]
        width = max(len("path"), *(len(name) for name in shown))
        lines = [f"{'path':<{width}}  digit  probability  top {self.ranked.shape[1]}"]
        for i, name in enumerate(shown):
            top = ", ".join(f"{d} ({self.probs[i, d]:.2f})" for d in self.ranked[i])
            lines.append(f"{name:<{width}}  {self.digits[i]:>5}  {self.confidence[i]:>11.4f}  {top}")
        if len(self.names) > max_rows:
            lines.append(f"... and {len(self.names) - max_rows} more: all of them are in the CSV file.")
        return "\n".join(lines)


def _short(name: str, width: int = 14) -> str:
    """A name cut to ``width`` characters from the left, keeping its end (the file name), which tells most."""
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def _gather(trainer: pl.Trainer, rows: list) -> list:
    """All processes' rows (each process predicted its own shard), or just these when there is one process."""
    if trainer.world_size == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, rows)
    return [row for part in gathered for row in part]
