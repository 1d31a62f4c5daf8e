"""Geometric and per-class metrics on hand-computed confusion matrices."""

from __future__ import annotations

import json

import pytest
import torch

from mnist_lit.reporting.metrics import evaluation_summary, geometric_errors, per_class_precision_recall, top_confusions


def _cm(errors: dict[tuple[int, int], int], per_class: int = 10) -> torch.Tensor:
    cm = torch.eye(10, dtype=torch.int64) * per_class
    for (i, j), n in errors.items():
        cm[i, i] -= n
        cm[i, j] += n
    return cm


def test_perfect_matrix() -> None:
    assert geometric_errors(_cm({})) == {"trace_accuracy": 1.0, "mae": 0.0, "mse": 0.0, "off_diagonal_mass": 0.0}


def test_a_one_read_as_two_costs_less_than_a_one_read_as_nine() -> None:
    near, far = _cm({(1, 2): 4}), _cm({(1, 9): 4})  # the same 4 mistakes out of 100
    g_near, g_far = geometric_errors(near), geometric_errors(far)
    assert g_near["trace_accuracy"] == g_far["trace_accuracy"] == pytest.approx(0.96)
    assert g_near["off_diagonal_mass"] == g_far["off_diagonal_mass"] == pytest.approx(0.04)
    assert g_near["mae"] == pytest.approx(4 * 1 / 100) and g_near["mse"] == pytest.approx(4 * 1 / 100)
    assert g_far["mae"] == pytest.approx(4 * 8 / 100) and g_far["mse"] == pytest.approx(4 * 64 / 100)


def test_hand_computed_small_matrix() -> None:
    cm = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 4, 4]])  # total 20, trace 12
    g = geometric_errors(cm)
    assert g["trace_accuracy"] == pytest.approx(12 / 20)
    assert g["mae"] == pytest.approx((1 + 2 + 1 + 4) / 20)  # every error here is one class away
    assert g["mse"] == pytest.approx((1 + 2 + 1 + 4) / 20)
    assert g["off_diagonal_mass"] == pytest.approx(8 / 20)
    precision, recall = per_class_precision_recall(cm)
    assert precision == pytest.approx([5 / 7, 3 / 8, 4 / 5])
    assert recall == pytest.approx([5 / 6, 3 / 6, 4 / 8])
    assert top_confusions(cm, k=3) == [(2, 1, 4), (1, 0, 2), (0, 1, 1)]


def test_a_class_never_predicted_has_zero_precision() -> None:
    cm = torch.tensor([[2, 0], [3, 0]])
    precision, recall = per_class_precision_recall(cm)
    assert precision == [0.4, 0.0] and recall == [1.0, 0.0]


def test_summary_is_json_ready() -> None:
    summary = json.loads(json.dumps(evaluation_summary(_cm({(3, 5): 2, (8, 9): 1}), k=5).as_dict()))
    assert summary["num_samples"] == 100
    assert summary["top_confusions"] == [
        {"true": 3, "predicted": 5, "count": 2},
        {"true": 8, "predicted": 9, "count": 1},
    ]
    assert isinstance(summary["confusion_matrix"][0][0], int)


@pytest.mark.parametrize("bad", [torch.zeros(10, 10), torch.ones(3, 4)])
def test_empty_or_non_square_matrices_are_refused(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="confusion matrix"):
        geometric_errors(bad)
