"""The notebooks' networks, one built for speed and one for accuracy, on one shared LightningModule base."""

from mnist_lit.models.accurate import AccurateCNN
from mnist_lit.models.base import MNISTClassifier
from mnist_lit.models.compact import CompactCNN
from mnist_lit.models.fast import FastCNN
from mnist_lit.models.keras_report import KerasReportCNN

__all__ = ["AccurateCNN", "CompactCNN", "FastCNN", "KerasReportCNN", "MNISTClassifier"]
