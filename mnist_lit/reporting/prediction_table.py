"""Predictions as a table: the most likely digits of each input, printed or as CSV; plain arrays, no torch."""

from __future__ import annotations

import csv
import io

import numpy as np

from mnist_lit.reporting.calibration import is_unsure
from mnist_lit.reporting.ood import is_not_digit


class PredictionTable:
    """Probabilities of N inputs over the 10 digits, with their names, as a CSV file or a printed table.

    With an ``unsure_threshold``, an input whose top probability is under it is marked "not sure" (the CSV's
    ``unsure`` column, 0 or 1; the table's answer reads ``not sure: 7 or 1?``). With ``ood_scores`` (higher: less
    like a digit) the CSV has ``ood_score``, and with an ``ood_threshold`` an input scoring above it is "not a digit"
    (the CSV's ``not_digit``, 0 or 1; the table's answer reads ``not a digit``, which comes before "not sure").
    """

    def __init__(
        self,
        names: list[str],
        probs: np.ndarray,
        labels: list[int] | None = None,
        top_k: int = 3,
        unsure_threshold: float | None = None,
        ood_scores: np.ndarray | None = None,
        ood_threshold: float | None = None,
        ood_method: str | None = None,
    ) -> None:
        if len(names) != len(probs) or (labels is not None and len(labels) != len(names)):
            raise ValueError(f"{len(names)} names, {len(probs)} probability rows and labels do not match")
        self.names = names
        self.probs = probs
        self.labels = labels
        self.ranked = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        self.digits = self.ranked[:, 0].tolist()
        self.confidence = probs[np.arange(len(probs)), self.ranked[:, 0]].tolist()
        self.unsure_threshold = unsure_threshold
        self.unsure = is_unsure(np.asarray(self.confidence), unsure_threshold).tolist()
        if ood_scores is not None and len(ood_scores) != len(names):
            raise ValueError(f"{len(names)} names but {len(ood_scores)} OOD scores")
        self.ood_scores = None if ood_scores is None else np.asarray(ood_scores, dtype=np.float64)
        self.ood_threshold = ood_threshold if ood_threshold is not None and np.isfinite(ood_threshold) else None
        self.ood_method = ood_method
        scores = np.zeros(len(names)) if self.ood_scores is None else self.ood_scores
        self.not_digit = is_not_digit(scores, self.ood_threshold).tolist()

    def answer(self, i: int) -> str:
        """The digit; ``not a digit`` when input ``i`` scores above the OOD threshold; else ``not sure: 7 or 1?`` (the
        two most likely digits) when it is unsure."""
        if self.not_digit[i]:
            return "not a digit"
        if self.unsure[i]:
            second = f" or {self.ranked[i, 1]}" if self.ranked.shape[1] > 1 else ""
            return f"not sure: {self.digits[i]}{second}?"
        return str(self.digits[i])

    def top(self, i: int, digits: int = 4) -> str:
        """The ``top_k`` most likely digits of input ``i``, as ``7:0.9812 1:0.0120 9:0.0031``."""
        return " ".join(f"{d}:{self.probs[i, d]:.{digits}f}" for d in self.ranked[i])

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        label_column = ["label"] if self.labels is not None else []
        ood_columns = ["not_digit", "ood_score"] if self.ood_scores is not None else []
        header = ["path", "digit", "probability", "top3", "unsure", *ood_columns, *label_column]
        writer.writerow([*header, *(f"p{d}" for d in range(10))])
        for i, name in enumerate(self.names):
            label = [self.labels[i]] if self.labels is not None else []
            ood = [int(self.not_digit[i]), f"{self.ood_scores[i]:.6g}"] if self.ood_scores is not None else []
            probs = (f"{p:.6f}" for p in self.probs[i])
            row = [name, self.digits[i], f"{self.confidence[i]:.6f}", self.top(i), int(self.unsure[i]), *ood, *label]
            writer.writerow([*row, *probs])
        return buffer.getvalue()

    def render(self, max_rows: int = 50) -> str:
        """A fixed-width table of the first ``max_rows`` inputs: path, digit (or "not sure: 7 or 1?"), probability,
        top 3; a last line says the threshold when there is one."""
        shown = [short_name(name, 60) for name in self.names[:max_rows]]
        width = max(len("path"), *(len(name) for name in shown))
        answers = [self.answer(i) for i in range(len(shown))]
        answer_width = max(5, *(len(a) for a in answers)) if answers else 5
        lines = [f"{'path':<{width}}  {'digit':>{answer_width}}  probability  top {self.ranked.shape[1]}"]
        for i, name in enumerate(shown):
            top = ", ".join(f"{d} ({self.probs[i, d]:.2f})" for d in self.ranked[i])
            lines.append(f"{name:<{width}}  {answers[i]:>{answer_width}}  {self.confidence[i]:>11.4f}  {top}")
        if len(self.names) > max_rows:
            lines.append(f"... and {len(self.names) - max_rows} more: all of them are in the CSV file.")
        if self.unsure_threshold:
            count = sum(self.unsure)
            lines.append(f"Not sure: {count} of {len(self.names)} (top probability under {self.unsure_threshold:.4f}).")
        if self.ood_threshold is not None:
            count = sum(self.not_digit)
            method = f"{self.ood_method} " if self.ood_method else ""
            lines.append(f"Not a digit: {count} of {len(self.names)} ({method}score above {self.ood_threshold:.4g}).")
        return "\n".join(lines)


def short_name(name: str, width: int = 14) -> str:
    """A name cut to ``width`` characters from the left, keeping its end (the file name), which tells most."""
    return name if len(name) <= width else "..." + name[-(width - 3) :]
