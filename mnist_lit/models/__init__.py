"""The notebooks' networks, on one shared LightningModule base."""

from mnist_lit.models.base import MNISTClassifier
from mnist_lit.models.compact import CompactCNN
from mnist_lit.models.keras_report import KerasReportCNN

__all__ = ["CompactCNN", "KerasReportCNN", "MNISTClassifier"]
