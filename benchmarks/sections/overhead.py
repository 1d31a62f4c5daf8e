"""Section ``overhead``: Lightning's cost per training step apart from the arithmetic, on a one-layer network."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import MNISTTensors, PreparedDataModule, bare_epoch_seconds, plain_fit_seconds
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from torch import nn

from mnist_lit.callbacks.progress import PROGRESS_BAR_REFRESH_RATE
from mnist_lit.models import MNISTClassifier


def linear_probe() -> MNISTClassifier:
    """A one-layer network (784 to 10) on mnist_lit's training step: its arithmetic is negligible, so the time of its
    steps is the loop's own."""
    return MNISTClassifier(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))


#: What the overhead section adds to a plain Trainer: name, callbacks (given a scratch folder), how many of them.
OVERHEAD_ADDITIONS: list[tuple[str, Callable[[Path], list[Callback]], int]] = [
    ("a callback that does nothing (each of 10)", lambda _: [Callback() for _ in range(10)], 10),
    ("ModelCheckpoint", lambda tmp: [ModelCheckpoint(dirpath=tmp, monitor="train/loss")], 1),
    ("EarlyStopping", lambda _: [EarlyStopping(monitor="train/loss", check_on_train_epoch_end=True)], 1),
    ("TQDM progress bar, redrawn every step (Lightning's default)", lambda _: [TQDMProgressBar(1)], 1),
    (f"TQDM progress bar, redrawn every {PROGRESS_BAR_REFRESH_RATE} steps (mnist_lit's default)",
     lambda _: [TQDMProgressBar(PROGRESS_BAR_REFRESH_RATE)], 1),
]  # fmt: skip


def bench_overhead(data: MNISTTensors, repeats: int, device: torch.device) -> list[dict[str, Any]]:
    """Lightning's cost per training step, apart from the arithmetic.

    The linear probe trains for one timed epoch (batch 128) in a bare loop, under a plain Trainer, and under a plain
    Trainer with each of ``OVERHEAD_ADDITIONS``; the differences are the Trainer's, the callbacks' and our training
    step's own Python. Medians over ``repeats`` interleaved rounds.
    """
    dm = PreparedDataModule(data, batch_size=128)
    steps = -(-len(data.train_labels) // 128)
    bare: list[float] = []
    plain: list[float] = []
    added: dict[str, list[float]] = {name: [] for name, _, _ in OVERHEAD_ADDITIONS}
    for _ in range(repeats):
        bare.append(bare_epoch_seconds(linear_probe(), dm, 2, device)[1])
        plain.append(plain_fit_seconds(linear_probe(), dm, 2)[1])
        for name, callbacks, _ in OVERHEAD_ADDITIONS:
            with tempfile.TemporaryDirectory(prefix="mnist_lit_bench_") as tmp:
                added[name].append(plain_fit_seconds(linear_probe(), dm, 2, callbacks(Path(tmp)))[1])
    plain_s = statistics.median(plain)
    rows = [
        {"added": "a plain Trainer (hooks, closure, optimizer wrapper, our step's metric updates)",
         "over": "a bare loop", "us_per_step": (plain_s - statistics.median(bare)) / steps * 1e6}
    ]  # fmt: skip
    for name, _, count in OVERHEAD_ADDITIONS:
        seconds = (statistics.median(added[name]) - plain_s) / count
        rows.append({"added": name, "over": "a plain Trainer", "us_per_step": seconds / steps * 1e6})
    return rows
