"""How well a score tells digits from non-digits, and where to put the "not a digit" threshold: arrays in, numbers
and figures out.

Scores follow the convention of :mod:`mnist_lit.models.ood`: higher means less like a digit. The detection numbers
take the digits (in-distribution) as the positives, as Hendrycks and Gimpel (2017) and the OOD literature after them
do, so that "FPR at 95% TPR" reads: when 95% of the digits are kept as digits, the share of the non-digits that are
also taken for digits. AUROC is the same whichever side is called positive. Both come from torchmetrics
(``BinaryAUROC``, ``BinaryROC``, exact: no thresholds binned), imported by the functions that use them: the
threshold functions are plain numpy, so that ``classify`` with an ONNX file never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

#: Share of the validation digits the default "not a digit" threshold keeps as digits.
DEFAULT_OOD_KEEP = 0.99
#: The true-positive rate (digits kept) at which :func:`fpr_at_tpr` reads the false-positive rate by default.
TPR_LEVEL = 0.95


def keep_threshold(scores: np.ndarray, keep: float = DEFAULT_OOD_KEEP) -> float:
    """The lowest threshold that keeps at least ``keep`` of these (validation digits') scores as digits.

    An input is "not a digit" when its score is strictly above the threshold, so the threshold is the
    ``ceil(keep * N)``-th smallest score: that many, and more only on ties, stay digits.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if values.size == 0:
        raise ValueError("no scores to choose a threshold from")
    if not np.isfinite(values).all():
        raise ValueError("the scores are not all finite")
    return float(values[int(np.ceil(keep * values.size)) - 1])


def is_not_digit(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """Which inputs are "not a digit": score strictly above ``threshold`` (none when there is no threshold)."""
    values = np.asarray(scores, dtype=np.float64)
    if threshold is None or not np.isfinite(threshold):
        return np.zeros(values.shape, dtype=bool)
    return values > threshold


def _as_binary(digit_scores: np.ndarray, other_scores: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Predictions in [0, 1] (higher: more like a digit), targets (1: a digit) for torchmetrics, and the distinct
    scores, highest first, that the predictions stand for.

    The predictions are the scores' ranks, scaled to [0, 1]: torchmetrics reads values outside [0, 1] as logits and
    applies a sigmoid, which in float64 rounds every score above about 37 to 1.0 and would tie what differs. Ranks
    keep the order and the ties, all that a ROC curve depends on.
    """
    digits = np.asarray(digit_scores, dtype=np.float64).ravel()
    others = np.asarray(other_scores, dtype=np.float64).ravel()
    if digits.size == 0 or others.size == 0:
        raise ValueError(f"need scores of both digits ({digits.size}) and non-digits ({others.size})")
    scores = np.concatenate([digits, others])
    if not np.isfinite(scores).all():
        raise ValueError("the scores are not all finite")
    import torch

    distinct, rank = np.unique(-scores, return_inverse=True)
    preds = torch.as_tensor(rank / max(len(distinct) - 1, 1), dtype=torch.float64)
    target = torch.cat([torch.ones(digits.size, dtype=torch.long), torch.zeros(others.size, dtype=torch.long)])
    return preds, target, -distinct


def auroc(digit_scores: np.ndarray, other_scores: np.ndarray) -> float:
    """The area under the ROC curve of telling ``digit_scores`` from ``other_scores`` (1: perfectly apart, 0.5:
    chance): the probability that a random non-digit scores higher than a random digit (ties count half)."""
    from torchmetrics.functional.classification import binary_auroc

    preds, target, _ = _as_binary(digit_scores, other_scores)
    return float(binary_auroc(preds, target))


def roc_curve(digit_scores: np.ndarray, other_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve: false-positive rates (non-digits taken for digits), true-positive rates (digits kept), and the
    score thresholds at which they hold (an input whose score is at most the threshold is kept; the first point,
    nothing kept, has ``-inf``), from torchmetrics' ``binary_roc``."""
    from torchmetrics.functional.classification import binary_roc

    preds, target, distinct = _as_binary(digit_scores, other_scores)
    fpr, tpr, thresholds = binary_roc(preds, target)
    index = np.rint(thresholds.numpy() * max(len(distinct) - 1, 1)).astype(np.int64)
    scores = distinct[index].copy()
    scores[0] = -np.inf
    return fpr.numpy(), tpr.numpy(), scores


def fpr_at_tpr(digit_scores: np.ndarray, other_scores: np.ndarray, tpr_level: float = TPR_LEVEL) -> float:
    """The share of non-digits taken for digits at the lowest threshold that keeps ``tpr_level`` of the digits."""
    if not 0.0 < tpr_level <= 1.0:
        raise ValueError(f"tpr_level must be in (0, 1], got {tpr_level}")
    fpr, tpr, _ = roc_curve(digit_scores, other_scores)
    reached = tpr.astype(np.float64) >= tpr_level - 1e-6  # torchmetrics' rates are float32
    return float(fpr[int(np.argmax(reached))])


def detection_summary(digit_scores: np.ndarray, other_scores: np.ndarray, threshold: float | None = None) -> dict:
    """AUROC, FPR at 95% TPR and the counts; with a ``threshold``, also the shares called "not a digit"."""
    summary: dict[str, float | int | None] = {
        "auroc": auroc(digit_scores, other_scores),
        "fpr_at_95_tpr": fpr_at_tpr(digit_scores, other_scores),
        "digits": int(np.asarray(digit_scores).size),
        "others": int(np.asarray(other_scores).size),
    }
    if threshold is not None and np.isfinite(threshold):
        summary["threshold"] = float(threshold)
        summary["digits_not_digit"] = float(is_not_digit(digit_scores, threshold).mean())
        summary["others_not_digit"] = float(is_not_digit(other_scores, threshold).mean())
    return summary


def roc_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "Digits against non-digits: ROC"
) -> Figure:
    """ROC curves, one per entry ``name -> (digit_scores, other_scores)``, each labelled with its AUROC and FPR at
    95% TPR; the 95% TPR level is drawn as a dotted line. The x axis is the share of non-digits taken for digits."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for name, (digits, others) in curves.items():
        fpr, tpr, _ = roc_curve(digits, others)
        label = f"{name}: AUROC {auroc(digits, others):.3f}, FPR95 {fpr_at_tpr(digits, others):.1%}"
        ax.plot(fpr, tpr, drawstyle="steps-post", label=label)
    ax.plot([0, 1], [0, 1], color="0.7", linewidth=0.8, linestyle="--")
    ax.axhline(TPR_LEVEL, color="0.5", linewidth=0.8, linestyle=":")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="non-digits taken for digits (false-positive rate)",
        ylabel="digits kept as digits (true-positive rate)",
        title=title,
    )
    ax.legend(loc="lower right", fontsize="small")
    return fig
