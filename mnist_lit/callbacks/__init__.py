"""Lightning callbacks: best-weight restoring, per-class metrics, figures, histograms, metrics.json, "not a digit" on
held-out non-digits, predictions, BatchNorm adapted to the images predicted, and the command line's own (the run's
config.yaml, the hint printed when a fit is stopped)."""

from mnist_lit.callbacks.adapt import AdaptBatchNorm
from mnist_lit.callbacks.figures import ReportFigures
from mnist_lit.callbacks.histograms import WeightHistograms
from mnist_lit.callbacks.ood import OODReport
from mnist_lit.callbacks.per_class import PerClassMetrics
from mnist_lit.callbacks.predictions import PredictionWriter
from mnist_lit.callbacks.progress import EpochLineProgress
from mnist_lit.callbacks.report import MetricsReport
from mnist_lit.callbacks.restore_best import RestoreBestWeights
from mnist_lit.callbacks.resume_hint import ResumeHint
from mnist_lit.callbacks.run_config import RunConfigSaver
from mnist_lit.callbacks.timing import EpochTimer

#: The name PerClassMetrics had until 0.2: configs and saved run configs that list it keep working.
GeometricErrorCallback = PerClassMetrics

__all__ = [
    "AdaptBatchNorm",
    "EpochLineProgress",
    "EpochTimer",
    "GeometricErrorCallback",
    "MetricsReport",
    "OODReport",
    "PerClassMetrics",
    "PredictionWriter",
    "ReportFigures",
    "RestoreBestWeights",
    "ResumeHint",
    "RunConfigSaver",
    "WeightHistograms",
]
