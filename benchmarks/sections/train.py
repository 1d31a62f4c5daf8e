"""Section ``train``: seconds per epoch of training steps, a bare PyTorch loop against ``fit`` under a plain Trainer
and ``fit`` as the notebook config sets it up."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from common import (
    NETWORKS,
    REPO_ROOT,
    MNISTTensors,
    PreparedDataModule,
    bare_epoch_seconds,
    configured,
    pass_timer,
    plain_fit_seconds,
    quietly,
)

from mnist_lit.data.datamodule import MNISTDataModule


def configured_epoch_seconds(config: Path, dm: MNISTDataModule, epochs: int, log_dir: Path) -> list[float]:
    """A notebook config's own Trainer and network, built by the CLI: its callbacks, TensorBoard logger, checkpoints
    and progress bar (drawn into /dev/null), with validation; the training passes timed."""
    with quietly():
        cli = configured(config, log_dir, "--trainer.max_epochs", str(epochs))
        cli.trainer.fit(cli.model, datamodule=dm)
    return pass_timer(cli.trainer).seconds


def _span(values: list[float]) -> str:
    """``min-max`` of ratios, for the table."""
    return f"{min(values):.2f}-{max(values):.2f}"


def bench_training(data: MNISTTensors, repeats: int, epochs: int, device: torch.device) -> list[dict[str, Any]]:
    """Seconds per epoch of training steps (after the first epoch, which includes kernel warm-up): the bare loop,
    ``fit`` under a plain Trainer, and ``fit`` as the notebook config sets it up.

    Ratios are taken within each interleaved triple, then the median over triples, so slow drifts of the machine's
    load cancel out.
    """
    rows = []
    for name, (cls, batch_size) in NETWORKS.items():
        dm = PreparedDataModule(data, batch_size)
        runs: dict[str, list[float]] = {"bare": [], "fit": [], "configured": []}
        for _ in range(repeats):  # interleaved, so that drifting machine load hits all sides alike
            pl.seed_everything(0, verbose=False)
            runs["bare"].append(statistics.median(bare_epoch_seconds(cls(), dm, epochs, device)[1:]))
            pl.seed_everything(0, verbose=False)
            runs["fit"].append(statistics.median(plain_fit_seconds(cls(), dm, epochs)[1:]))
            with tempfile.TemporaryDirectory(prefix="mnist_lit_bench_logs_") as logs:
                seconds = configured_epoch_seconds(REPO_ROOT / "configs" / f"{name}.yaml", dm, epochs, Path(logs))
            runs["configured"].append(statistics.median(seconds[1:]))
        fit_ratios = [f / b for f, b in zip(runs["fit"], runs["bare"], strict=True)]
        configured_ratios = [c / b for c, b in zip(runs["configured"], runs["bare"], strict=True)]
        rows.append(
            {"network": name, "batch": batch_size, "images": len(data.train_labels),
             "bare_s": statistics.median(runs["bare"]), "fit_s": statistics.median(runs["fit"]),
             "configured_s": statistics.median(runs["configured"]),
             "fit_ratio": statistics.median(fit_ratios), "fit_ratio_range": _span(fit_ratios),
             "configured_ratio": statistics.median(configured_ratios),
             "configured_ratio_range": _span(configured_ratios), "triples": repeats}
        )  # fmt: skip
    return rows
