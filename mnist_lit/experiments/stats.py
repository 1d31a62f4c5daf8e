"""Statistics of repeated runs: the spread over seeds, and whether two sets of seeds differ (scipy does the tests)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

#: Confidence level of every interval reported.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation, extremes and the Student-t interval of the mean of ``n`` values.

    With one value the standard deviation and the interval are undefined (None).
    """

    n: int
    mean: float
    sd: float | None
    min: float
    max: float
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def spread(values: Sequence[float]) -> Spread:
    """The :class:`Spread` of ``values`` (at least one)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if x.size < 2:
        return Spread(1, mean, None, mean, mean, None, None)
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        low = high = mean
    else:
        low, high = stats.t.interval(CONFIDENCE, df=x.size - 1, loc=mean, scale=sd / math.sqrt(x.size))
    return Spread(int(x.size), mean, sd, float(x.min()), float(x.max()), float(low), float(high))


@dataclass(frozen=True)
class Comparison:
    """B's mean minus A's, Welch's interval of that difference and Welch's two-sided t-test p-value."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def distinguishable(self) -> bool:
        return self.p_value < 1 - CONFIDENCE

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "distinguishable": self.distinguishable}


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Compare two samples with Welch's t-test (unequal variances); each needs at least two values.

    Two samples without any spread cannot be tested: equal means then give p = 1, different ones p = 0.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        raise ValueError("each side needs at least two values (seeds) for a test")
    difference = float(y.mean() - x.mean())
    if x.var(ddof=1) == 0 and y.var(ddof=1) == 0:
        p = 1.0 if difference == 0 else 0.0
        return Comparison(x.size, y.size, float(x.mean()), float(y.mean()), difference, difference, difference, p)
    result = stats.ttest_ind(y, x, equal_var=False)
    interval = result.confidence_interval(CONFIDENCE)
    return Comparison(
        int(x.size), int(y.size), float(x.mean()), float(y.mean()), difference,
        float(interval.low), float(interval.high), float(result.pvalue),
    )  # fmt: skip


def sentence(c: Comparison, a: str = "A", b: str = "B") -> str:
    """One plain sentence: which mean test accuracy is higher, by how much, and whether seed noise explains it."""
    seeds = f"{c.n_a} seeds each" if c.n_a == c.n_b else f"{c.n_a} and {c.n_b} seeds"
    if c.difference == 0:
        head = f"{a} and {b} have the same mean"
    else:
        higher, lower = (b, a) if c.difference > 0 else (a, b)
        head = f"{higher} is higher than {lower} by {abs(c.difference) * 100:.3g}%"
    verdict = (
        "this is unlikely to be seed noise alone"
        if c.distinguishable
        else "this is not distinguishable from seed noise"
    )
    return f"{head}; with {seeds} {verdict} (p = {c.p_value:.2g})."
