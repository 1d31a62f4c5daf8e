"""Numbers read off a confusion matrix: notebook B's geometric errors, and per-class metrics beyond it.

Pure functions over a (true x predicted) count matrix, so they are testable on hand-made matrices. The digit
classes are ordered, so |i - j| measures how far a wrong answer lands from the true digit: a 1 read as 2 costs
less than a 1 read as 9, which plain accuracy cannot tell apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor


def _as_counts(cm: Tensor | Any) -> Tensor:
    cm = torch.as_tensor(cm, dtype=torch.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {tuple(cm.shape)}")
    if cm.sum() <= 0:
        raise ValueError("the confusion matrix is empty: no sample was counted")
    return cm


def geometric_errors(cm: Tensor | Any) -> dict[str, float]:
    """Notebook B's metrics over all cells, the diagonal included.

    trace_accuracy = trace / total; mae = sum |i-j| cm[i,j] / total; mse = sum (i-j)^2 cm[i,j] / total;
    off_diagonal_mass = 1 - trace / total.
    """
    cm = _as_counts(cm)
    idx = torch.arange(cm.shape[0], dtype=torch.float64)
    distance = (idx[:, None] - idx[None, :]).abs()
    total = cm.sum()
    trace_accuracy = (cm.trace() / total).item()
    return {
        "trace_accuracy": trace_accuracy,
        "mae": ((distance * cm).sum() / total).item(),
        "mse": ((distance**2 * cm).sum() / total).item(),
        "off_diagonal_mass": 1.0 - trace_accuracy,
    }


def per_class_precision_recall(cm: Tensor | Any) -> tuple[list[float], list[float]]:
    """Precision (column-wise) and recall (row-wise) of each class; 0.0 where a class was never predicted/seen."""
    cm = _as_counts(cm)
    tp = cm.diagonal()
    predicted, actual = cm.sum(dim=0), cm.sum(dim=1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    return precision.tolist(), recall.tolist()


def top_confusions(cm: Tensor | Any, k: int = 5) -> list[tuple[int, int, int]]:
    """The ``k`` most frequent mistakes as (true, predicted, count), largest first, ties by (true, predicted)."""
    cm = _as_counts(cm).to(torch.int64)
    pairs = [(int(cm[i, j]), i, j) for i in range(cm.shape[0]) for j in range(cm.shape[1]) if i != j and cm[i, j]]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [(i, j, count) for count, i, j in pairs[:k]]


@dataclass(frozen=True)
class Confusion:
    """One kind of mistake: how often digit ``true`` was read as ``predicted``."""

    true: int
    predicted: int
    count: int


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation (a validation epoch, a test) says about the network: its confusion matrix, summed over all
    processes, and everything derived from it, with the calibration of its probabilities.

    The network computes it once per epoch (:meth:`~mnist_lit.models.base.MNISTClassifier.evaluation`); the figures,
    TensorBoard and ``metrics.json`` read it. :meth:`as_dict` is its JSON form.
    """

    confusion_matrix: list[list[int]]
    geometric: dict[str, float]
    precision: list[float]
    recall: list[float]
    top_confusions: list[Confusion]
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return sum(map(sum, self.confusion_matrix))

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, in the layout of ``metrics.json``."""
        return {
            "num_samples": self.num_samples,
            "confusion_matrix": self.confusion_matrix,
            "geometric": self.geometric,
            "per_class": {"precision": self.precision, "recall": self.recall},
            "top_confusions": [asdict(c) for c in self.top_confusions],
            "calibration": self.calibration,
        }


def evaluation_summary(cm: Tensor | Any, k: int = 5, calibration: dict[str, Any] | None = None) -> Evaluation:
    """Everything the report says about one confusion matrix (with ``calibration``, when known)."""
    precision, recall = per_class_precision_recall(cm)
    return Evaluation(
        confusion_matrix=torch.as_tensor(cm).to(torch.int64).tolist(),
        geometric=geometric_errors(cm),
        precision=precision,
        recall=recall,
        top_confusions=[Confusion(i, j, n) for i, j, n in top_confusions(cm, k)],
        calibration=calibration or {},
    )
