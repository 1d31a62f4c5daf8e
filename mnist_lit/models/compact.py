"""Notebook B's network ("the compact CNN"): two small convolutions with dropout, a dense layer of 100."""

from __future__ import annotations

from typing import Any

from mnist_lit.models.base import MNISTClassifier
from mnist_lit.models.layers import compact_layers


class CompactCNN(MNISTClassifier):
    """Conv 8 - pool - Dropout - Conv 16 - pool - Dropout - Dense 100 - Dropout - Dense 10; 42,358 parameters.

    Each pooling layer runs before its ReLU, as in :class:`~mnist_lit.models.KerasReportCNN`: the same function,
    computed on 4 times fewer values.

    Args:
        filters: output channels of the two 3x3 convolutions (valid padding, ReLU).
        dense_units: width of the hidden dense layer (ReLU).
        conv_dropout: dropout rate after each pooling layer.
        dense_dropout: dropout rate before the output layer.
        **kwargs: training options of :class:`~mnist_lit.models.base.MNISTClassifier`.
    """

    def __init__(
        self,
        filters: tuple[int, int] = (8, 16),
        dense_units: int = 100,
        conv_dropout: float = 0.2,
        dense_dropout: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(compact_layers(filters, dense_units, conv_dropout, dense_dropout), **kwargs)
