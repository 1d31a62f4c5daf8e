"""What the benchmark sections share: the data they train on, a median timer, plain loops and Trainers, and
``fit`` as a user runs it.

A sibling module of ``bench.py`` (``benchmarks/`` is not a package): the sections import it as ``common``."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from bench_timing import TrainingPassTimer, wait_for_device
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from torch import Tensor

from mnist_lit.cli.lightning_cli import MNISTLitCLI, build_cli
from mnist_lit.data.datamodule import MNISTDataModule, TensorImageDataset
from mnist_lit.data.idx import encode_idx
from mnist_lit.models import CompactCNN, KerasReportCNN, MNISTClassifier
from mnist_lit.utils.io import atomic_write_bytes

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
NETWORKS: dict[str, tuple[type[MNISTClassifier], int]] = {  # name: (class, the notebook's batch size)
    "compact": (CompactCNN, 128),
    "keras_report": (KerasReportCNN, 64),
}


@dataclass
class MNISTTensors:
    """The training and test images (uint8) and labels, and a root folder torchvision's MNIST can read."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    torchvision_root: Path


class PreparedDataModule(MNISTDataModule):
    """MNISTDataModule over tensors already in memory: the benchmark loads (and verifies) the files once."""

    def __init__(self, data: MNISTTensors, batch_size: int) -> None:
        super().__init__(batch_size=batch_size, val_split="test")
        # save_hyperparameters collects a subclass's __init__ arguments too: the tensors are no hyperparameter (a
        # logger would write 70,000 images into hparams.yaml).
        for hparams in (self._hparams, self._hparams_initial):
            hparams.pop("data", None)
        self.data_train = TensorImageDataset(data.train_images, data.train_labels)
        self.data_test = self.data_val = TensorImageDataset(data.test_images, data.test_labels)

    def prepare_data(self) -> None:
        """Nothing to acquire: the tensors were given."""


def real_mnist(data_dir: Path) -> MNISTTensors:
    """The real MNIST through the project's own acquisition and verification."""
    dm = MNISTDataModule(data_dir=data_dir, val_split="test")
    dm.prepare_data()
    dm.setup()
    train, test = dm.data_train, dm.data_test
    return MNISTTensors(train.images, train.labels, test.images, test.labels, data_dir)


def synthetic_mnist(root: Path, n_train: int = 512, n_test: int = 256) -> MNISTTensors:
    """Random MNIST-shaped data, also written as IDX files so that torchvision's reader can be timed on it."""
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator) for n in (n_train, n_test)]
    labels = [torch.randint(0, 10, (n,), generator=generator) for n in (n_train, n_test)]
    raw = root / "MNIST" / "raw"
    for split, images, targets in (("train", tensors[0], labels[0]), ("t10k", tensors[1], labels[1])):
        atomic_write_bytes(raw / f"{split}-images-idx3-ubyte", encode_idx(images.numpy(), "images"))
        atomic_write_bytes(raw / f"{split}-labels-idx1-ubyte", encode_idx(targets.numpy().astype(np.uint8), "labels"))
    return MNISTTensors(tensors[0], labels[0], tensors[1], labels[1], root)


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Send what is printed to stdout and stderr (progress bars, test results) to /dev/null.

    Lightning's own log lines still show: its logging handler keeps the stream it was given at import.
    """
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


def bare_step(
    model: MNISTClassifier, optimizer: torch.optim.Optimizer, dm: MNISTDataModule, images: Tensor, labels: Tensor
) -> None:
    """One plain PyTorch training step: normalize, forward, cross-entropy, backward, Adam."""
    loss = F.cross_entropy(model(dm.normalize(images)), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bare_epoch_seconds(model: MNISTClassifier, dm: MNISTDataModule, epochs: int, device: torch.device) -> list[float]:
    """A plain PyTorch loop over the same network, batches and optimizer (the module's own); seconds per epoch."""
    model.to(device).train()
    optimizer = model.configure_optimizers()
    loader = dm.train_dataloader()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for images, labels in loader:
            bare_step(model, optimizer, dm, images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
        wait_for_device(device)
        times.append(time.perf_counter() - start)
    return times


def plain_trainer(callbacks: Sequence[Callback] = (), **kwargs: Any) -> pl.Trainer:
    """A Trainer with nothing of its own: no logger, model summary or validation, and checkpoints or a progress bar
    only when ``callbacks`` bring them. ``kwargs`` go to the Trainer (``max_epochs``, ``profiler``, ...)."""
    return pl.Trainer(
        logger=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        callbacks=list(callbacks), **kwargs,
    )  # fmt: skip


def plain_fit_seconds(
    model: MNISTClassifier, dm: MNISTDataModule, epochs: int, callbacks: Sequence[Callback] = ()
) -> list[float]:
    """mnist_lit's training step (metrics, logging) under a plain Trainer plus ``callbacks``; seconds of each
    epoch's training batches."""
    timer = TrainingPassTimer()
    trainer = plain_trainer([*callbacks, timer], max_epochs=epochs)
    with quietly():
        trainer.fit(model, datamodule=dm)
    return timer.seconds


def configured(config: Path, log_dir: Path, *overrides: str) -> MNISTLitCLI:
    """A config's Trainer and network as ``python -m mnist_lit`` builds them (its callbacks, TensorBoard logger
    under ``log_dir``, checkpoints, progress bar), with a TrainingPassTimer added and the model summary off;
    nothing run yet. Its datamodule is not used: the benchmark passes its own, over tensors already in memory."""
    args = [
        "--config", str(config), "--trainer.enable_model_summary", "false",
        "--trainer.logger.init_args.save_dir", str(log_dir),
        "--trainer.callbacks+=bench_timing.TrainingPassTimer", *overrides,
    ]  # fmt: skip
    return build_cli(args, run=False)


def pass_timer(trainer: pl.Trainer) -> TrainingPassTimer:
    """The TrainingPassTimer that :func:`configured` added to a config's callbacks."""
    return next(cb for cb in trainer.callbacks if isinstance(cb, TrainingPassTimer))


def run_fit(config: Path, data_dir: Path, *overrides: str) -> dict[str, Any]:
    """Run ``fit`` on ``config`` as a user would, in a fresh process; wall time, test accuracy, peak RSS."""
    with tempfile.TemporaryDirectory(prefix="mnist_lit_bench_") as tmp:
        cmd = [
            sys.executable, "-m", "mnist_lit", "fit", "--config", str(config),
            "--data.data_dir", str(data_dir.resolve()), "--trainer.logger.init_args.save_dir", tmp, *overrides,
        ]  # fmt: skip
        log = Path(tmp) / "fit.log"
        start = time.perf_counter()
        with log.open("w") as handle:
            process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)  # this child's own peak RSS, not any earlier child's
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{log.read_text()[-2000:]}")
        (report,) = [json.loads(p.read_text()) for p in Path(tmp).rglob("metrics.json")]
    return {
        "config": str(config.relative_to(REPO_ROOT) if config.is_relative_to(REPO_ROOT) else config),
        "overrides": " ".join(overrides),
        "wall_s_from_process_start": wall,
        "fit_s": sum(report["seconds_per_epoch"]),
        "epochs": report["epochs_run"],
        "seconds_per_epoch": report["seconds_per_epoch"],
        "test_acc": report["test_acc"],
        "test_loss": report["test_loss"],
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }
