"""What a ``tune`` trial needs besides ``fit``: a stop on a non-finite loss, a heartbeat, and the count of trials.

Pruning uses optuna-integration's ``PyTorchLightningPruningCallback``: it imports ``lightning.pytorch`` (our
Lightning 2.x), reports the monitored metric after each validation and raises ``optuna.TrialPruned`` out of
``fit``, so no callback of our own is needed for it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import optuna
import torch
from lightning.pytorch.callbacks import Callback
from optuna.trial import FrozenTrial, TrialState

#: User attribute holding why a trial failed (the exception); stale trials (a killed worker's) have none.
FAIL_REASON = "fail_reason"


class FiniteLoss(Callback):
    """Stop a run with an error once its training loss has been NaN or infinite, so the trial fails with that reason
    instead of finishing on a meaningless accuracy.

    The check is kept on the loss's device and read on the steps Lightning logs and at each epoch's end: reading it
    every step would wait for a GPU at every step.
    """

    def __init__(self) -> None:
        self._finite: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        finite = torch.isfinite(loss.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:  # type: ignore[attr-defined]
            self._check(trainer, f"batch {batch_idx}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, "its end")

    def _check(self, trainer: pl.Trainer, where: str) -> None:
        if self._finite is not None and not bool(self._finite):
            raise FloatingPointError(
                f"the training loss became NaN or infinite in epoch {trainer.current_epoch}, by {where}"
            )


class Heartbeat:
    """Record a running trial's heartbeat in the storage every ``interval`` seconds, from a thread, so that another
    worker can tell a live trial from one whose process was killed (Optuna then fails it and runs it again)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)

    def _beat(self, storage: Any, trial_id: int, interval: float) -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if self._stop.wait(interval):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Tally:
    """Trials by what they mean for ``--trials``: finished (complete, pruned, or failed by their own error), running,
    waiting to run (a killed or interrupted trial queued again), and stale failures (replaced by their rerun)."""

    finished: int
    running: int
    waiting: int
    replaced: int

    @property
    def claimed(self) -> int:
        return self.finished + self.running + self.waiting


def counts_as_finished(trial: FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and FAIL_REASON in trial.user_attrs


def tally(trials: Sequence[FrozenTrial]) -> Tally:
    """Count ``trials`` as :class:`Tally` says."""
    finished = sum(counts_as_finished(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return Tally(finished, running, waiting, len(trials) - finished - running - waiting)
