"""Predictions as a table: the most likely digits of each input, printed or as CSV; plain arrays, no torch."""

from __future__ import annotations

import csv
import io

import numpy as np


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
        shown = [short_name(name, 60) for name in self.names[:max_rows]]
        width = max(len("path"), *(len(name) for name in shown))
        lines = [f"{'path':<{width}}  digit  probability  top {self.ranked.shape[1]}"]
        for i, name in enumerate(shown):
            top = ", ".join(f"{d} ({self.probs[i, d]:.2f})" for d in self.ranked[i])
            lines.append(f"{name:<{width}}  {self.digits[i]:>5}  {self.confidence[i]:>11.4f}  {top}")
        if len(self.names) > max_rows:
            lines.append(f"... and {len(self.names) - max_rows} more: all of them are in the CSV file.")
        return "\n".join(lines)


def short_name(name: str, width: int = 14) -> str:
    """A name cut to ``width`` characters from the left, keeping its end (the file name), which tells most."""
    return name if len(name) <= width else "..." + name[-(width - 3) :]
