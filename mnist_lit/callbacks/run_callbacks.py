"""The callbacks every run of the command line has, whatever its recipe, each with its options under its own key.

They read what an mnist_lit network computes (three of them refuse any other module), so they are not a recipe's
choice: the CLI adds them, and a recipe sets only the options that differ (``checkpoint: {monitor: val/loss}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from mnist_lit.callbacks.figures import ReportFigures
from mnist_lit.callbacks.per_class import PerClassMetrics
from mnist_lit.callbacks.predictions import PredictionWriter
from mnist_lit.callbacks.report import MetricsReport
from mnist_lit.callbacks.timing import EpochTimer

#: The run callbacks by their config keys, in the order they run.
RUN_CALLBACKS: dict[str, type[Callback]] = {
    "checkpoint": ModelCheckpoint,
    "per_class": PerClassMetrics,
    "figures": ReportFigures,
    "epoch_timer": EpochTimer,
    "metrics_report": MetricsReport,
    "predictions": PredictionWriter,
}


def with_run_callbacks(
    listed: Sequence[Callback], run: Mapping[str, Callback], checkpointing: bool = True
) -> list[Callback]:
    """The config's own callbacks (``listed``), then the run callbacks (``run``, by key), but for the checkpoint when
    ``checkpointing`` is off.

    A config written before the run callbacks were given in code lists some of them itself: its own instance is kept
    (a saved run's ``config.yaml`` still runs as it did), with a warning that says what to delete.
    """
    callbacks = list(listed)
    for key, callback in run.items():
        kind = RUN_CALLBACKS[key]
        own = [c for c in callbacks if isinstance(c, kind)]
        if own:
            rank_zero_warn(
                f"trainer.callbacks lists {kind.__name__}, which every run now has: delete it from the list and give "
                f"its options under `{key}:` (see --print_config). This run uses the listed one."
            )
            for checkpoint in own:
                if isinstance(checkpoint, ModelCheckpoint):
                    checkpoint.save_last = True  # as the run checkpoint's default: `--ckpt_path last` needs it
        elif checkpointing or not isinstance(callback, ModelCheckpoint):
            callbacks.append(callback)
    return callbacks
