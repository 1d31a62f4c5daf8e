"""How far a network's confidence is from its accuracy, and when it should not answer: plain arrays, no torch.

- :func:`reliability_bins`: the top-label confidences in 15 equal bins, each bin's accuracy and mean confidence,
  and from them the expected calibration error (ECE: the bins' |accuracy - confidence| weighted by their share of
  the inputs, the L1 norm) and the maximum calibration error (MCE: the largest gap of a non-empty bin, the max norm).
  The bins are Guo et al.'s (2017): ((m-1)/M, m/M], so a confidence of exactly 1.0 is in the last bin (torchmetrics
  puts it in a bin of its own beyond 1; the two agree whenever no confidence is exactly 1.0 or on a boundary).
- :func:`unsure_threshold`: the confidence under which an answer is marked "not sure", chosen on validation images.
- :func:`risk_coverage`: the error rate of the answered inputs against the fraction answered (selective
  classification, Geifman and El-Yaniv 2017).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Guo et al.'s number of bins, also torchmetrics' default.
N_BINS = 15
#: Share of validation images the default "not sure" threshold still answers.
DEFAULT_KEEP = 0.995


def reliability_bins(confidences: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """Bin top-label ``confidences`` (N,) with ``correct`` (N,, bool or 0/1): per bin the count, accuracy and mean
    confidence (None for an empty bin), and the ECE and MCE."""
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hit.shape:
        raise ValueError(f"{conf.shape[0]} confidences but {hit.shape[0]} correctness flags")
    index = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(index, weights=hit, minlength=n_bins)
    filled = counts > 0
    accuracy = np.divide(hit_sum, counts, out=np.zeros(n_bins), where=filled)
    mean_conf = np.divide(conf_sum, counts, out=np.zeros(n_bins), where=filled)
    gaps = np.abs(accuracy - mean_conf)
    total = max(int(counts.sum()), 1)
    return {
        "n_bins": n_bins,
        "ece": float((gaps * counts).sum() / total),
        "mce": float(gaps[filled].max()) if filled.any() else 0.0,
        "edges": np.linspace(0.0, 1.0, n_bins + 1).round(6).tolist(),
        "count": counts.tolist(),
        "accuracy": [float(a) if f else None for a, f in zip(accuracy, filled, strict=True)],
        "confidence": [float(c) if f else None for c, f in zip(mean_conf, filled, strict=True)],
    }


def top_label(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top probability of each row of ``probabilities`` (N, C), and whether its class is the label."""
    probs = np.asarray(probabilities)
    return probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels)


def unsure_threshold(confidences: np.ndarray, keep: float = DEFAULT_KEEP) -> float:
    """The highest threshold that still answers at least ``keep`` of these (validation) confidences.

    An input is unsure when its confidence is strictly under the threshold, so the threshold is the confidence of
    the ``ceil(keep * N)``-th most confident input: that many, and more only on ties, stay answered.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    conf = np.sort(np.asarray(confidences, dtype=np.float64).ravel())[::-1]
    if conf.size == 0:
        raise ValueError("no confidences to choose a threshold from")
    return float(conf[int(np.ceil(keep * conf.size)) - 1])


def is_unsure(confidences: np.ndarray, threshold: float | None) -> np.ndarray:
    """Which answers are unsure: confidence strictly under ``threshold`` (none when there is no threshold)."""
    conf = np.asarray(confidences, dtype=np.float64)
    if threshold is None or threshold <= 0.0:
        return np.zeros(conf.shape, dtype=bool)
    return conf < threshold


def risk_coverage(confidences: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each threshold in the data (from the most confident input down): the coverage (fraction answered),
    the risk (error rate of the answered), and the threshold. Ties are answered together."""
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    wrong = 1.0 - np.asarray(correct, dtype=np.float64).ravel()
    order = np.argsort(-conf, kind="stable")
    conf, wrong = conf[order], wrong[order]
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    answered = np.arange(1, conf.size + 1)[last_of_tie]
    errors = np.cumsum(wrong)[last_of_tie]
    return answered / conf.size, errors / answered, conf[last_of_tie]


def selective_summary(confidences: np.ndarray, correct: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """At ``threshold``: the fraction marked unsure, and the error rate of the rest and of all inputs."""
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=bool).ravel()
    unsure = is_unsure(conf, threshold)
    answered = ~unsure
    return {
        "threshold": threshold,
        "images": int(conf.size),
        "unsure_fraction": float(unsure.mean()) if conf.size else 0.0,
        "error_rate_answered": float((~hit[answered]).mean()) if answered.any() else 0.0,
        "error_rate_all": float((~hit).mean()) if conf.size else 0.0,
        "errors_caught": int((~hit & unsure).sum()),
        "errors_left": int((~hit & answered).sum()),
    }
