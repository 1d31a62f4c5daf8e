"""The notebooks' networks, one built for speed and one for accuracy, on one shared LightningModule base.

The LightningModules import Lightning; they are loaded when first used (PEP 562), so that the plain layer builders
(:mod:`.layers`) stay cheap to import for a model folder loaded without Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnist_lit.models.accurate import AccurateCNN
    from mnist_lit.models.base import MNISTClassifier
    from mnist_lit.models.compact import CompactCNN
    from mnist_lit.models.fast import FastCNN
    from mnist_lit.models.keras_report import KerasReportCNN

#: The names loaded on first use, and their modules.
_LAZY = {
    "AccurateCNN": "mnist_lit.models.accurate",
    "CompactCNN": "mnist_lit.models.compact",
    "FastCNN": "mnist_lit.models.fast",
    "KerasReportCNN": "mnist_lit.models.keras_report",
    "MNISTClassifier": "mnist_lit.models.base",
}

__all__ = ["AccurateCNN", "CompactCNN", "FastCNN", "KerasReportCNN", "MNISTClassifier"]


def __getattr__(name: str) -> Any:
    """Import a network's module on first use of its name."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
