"""Lightning callbacks: best-weight restoring, geometric errors, figures, histograms, metrics.json, "not a digit"
on held-out non-digits, predictions."""

from mnist_lit.callbacks.figures import ReportFigures
from mnist_lit.callbacks.geometric import GeometricErrorCallback
from mnist_lit.callbacks.histograms import WeightHistograms
from mnist_lit.callbacks.ood import OODReport
from mnist_lit.callbacks.predictions import PredictionWriter
from mnist_lit.callbacks.progress import EpochLineProgress
from mnist_lit.callbacks.report import MetricsReport
from mnist_lit.callbacks.restore_best import RestoreBestWeights
from mnist_lit.callbacks.timing import EpochTimer

__all__ = [
    "EpochLineProgress",
    "EpochTimer",
    "GeometricErrorCallback",
    "MetricsReport",
    "OODReport",
    "PredictionWriter",
    "ReportFigures",
    "RestoreBestWeights",
    "WeightHistograms",
]
