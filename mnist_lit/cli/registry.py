"""The commands of ``python -m mnist_lit``, and the logging every one of them starts with: importable without torch.

The entry point (:mod:`mnist_lit.cli.dispatch`) runs the commands from this table, and the LightningCLI
(:mod:`mnist_lit.cli.lightning_cli`) names them in its help; neither imports the other to learn what they are.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TextIO

#: LightningCLI's subcommands, each with what it does here.
LIGHTNING_SUBCOMMANDS = {
    "fit": "train a network as a config says, then test it (--test_after_fit false: do not)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test set",
    "predict": "classify your own images (--data.predict_path), or the test set",
}

#: The other commands: name -> ("module:function", what it does); each parses its own arguments.
COMMANDS = {
    "import-keras": ("mnist_lit.cli.import_keras:main", "a Keras model to a checkpoint"),
    "export": ("mnist_lit.cli.export:main", "a checkpoint to ONNX or Keras"),
    "serve": ("mnist_lit.cli.serve:main", "a web page to draw digits on, and an HTTP API"),
    "classify": ("mnist_lit.cli.classify:main", "your digit images, at once: with an ONNX file, without torch"),
    "calibrate": ("mnist_lit.cli.calibrate:main", "temperature scaling and the 'not sure' threshold for a checkpoint"),
    "sweep": ("mnist_lit.cli.sweep:main", "fit once per seed; test accuracy's mean, spread and 95% interval"),
    "compare": ("mnist_lit.cli.compare:main", "two sweeps: the difference, its 95% interval and Welch's p-value"),
    "tune": ("mnist_lit.cli.tune:main", "search hyperparameters with Optuna, on a validation split, in a database"),
}

HELP_FLAGS = ("-h", "--help")


def configure_logging() -> None:
    """Print ``mnist_lit``'s own INFO messages (data acquisition, skipped inputs) as Lightning prints its own, and
    silence exactly the two messages of every run that are neither ours nor about the user's setup: Lightning's
    advertisement, and a deprecation inside Lightning's own pytree code. Every other warning stays."""
    logger = logging.getLogger("mnist_lit")
    if not logger.handlers:
        handler = CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvertisement) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvertisement())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class CurrentStderrHandler(logging.StreamHandler):  # not [TextIO]: unsubscriptable before Python 3.11
    """A stream handler that writes to whatever ``sys.stderr`` is when a message is emitted, not to the one of the day
    it was made: a caller that swaps ``sys.stderr`` (pytest's capture, a notebook, ``contextlib.redirect_stderr``) gets
    the messages, and none goes to a stream closed since. The standard library's ``logging.lastResort`` does the same
    (``logging._StderrHandler``, private, hence this copy of its few lines)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)  # not StreamHandler's: it would store a stream

    @property
    def stream(self) -> TextIO:  # read-only on purpose: never a stored stream
        """The current ``sys.stderr``."""
        return sys.stderr


class _DropAdvertisement(logging.Filter):
    """Drops Lightning's suggestion to install a logging service, printed at every run's start: nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")
