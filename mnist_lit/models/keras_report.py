"""Notebook A's network ("the Keras report"): three 3x3 convolutions, a dense layer of 128, dropout 0.5."""

from __future__ import annotations

from typing import Any

from mnist_lit.models.base import MNISTClassifier
from mnist_lit.models.layers import keras_report_layers


class KerasReportCNN(MNISTClassifier):
    """Conv 32 - pool - Conv 64 - pool - Conv 64 - Flatten - Dense 128 - Dropout - Dense 10; 130,890 parameters.

    Each pooling layer runs before its ReLU, not after as the notebook wrote them: max-pooling and ReLU commute
    exactly (both pick the same values and pass gradients to the same pixels), and the ReLU then runs on 4 times
    fewer values.

    Args:
        filters: output channels of the three 3x3 convolutions (valid padding, ReLU).
        dense_units: width of the hidden dense layer.
        dropout: dropout rate before the output layer.
        **kwargs: training options of :class:`~mnist_lit.models.base.MNISTClassifier`.
    """

    def __init__(
        self,
        filters: tuple[int, int, int] = (32, 64, 64),
        dense_units: int = 128,
        dropout: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(keras_report_layers(filters, dense_units, dropout), **kwargs)
