"""Section ``compile``: configs/fast.yaml's training, eager against ``torch.compile``, in bf16 autocast and fp32."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import REPO_ROOT, MNISTTensors, PreparedDataModule, configured, pass_timer, quietly


def bench_compile(data: MNISTTensors, epochs: int) -> list[dict[str, Any]]:
    """configs/fast.yaml's network and training, eager against ``torch.compile`` (default mode), in its bf16 autocast
    and in fp32: seconds of the first epoch (which compiles) and the later ones, and test accuracy. One run each."""
    rows = []
    for precision in ("bf16-mixed", "32-true"):
        for compiled in (False, True):
            with tempfile.TemporaryDirectory(prefix="mnist_lit_bench_logs_") as logs, quietly():
                args = ["--trainer.max_epochs", str(epochs), "--trainer.precision", precision]
                cli = configured(REPO_ROOT / "configs" / "fast.yaml", Path(logs), *args)
                dm = PreparedDataModule(data, cli.datamodule.hparams.batch_size)
                if compiled:
                    torch._dynamo.reset()  # nothing compiled earlier in this process is reused
                    cli.model.net = torch.compile(cli.model.net)
                cli.trainer.fit(cli.model, datamodule=dm)
                (result,) = cli.trainer.test(cli.model, datamodule=dm, verbose=False)
            seconds = pass_timer(cli.trainer).seconds
            rows.append(
                {"precision": precision, "torch.compile": compiled, "first_epoch_s": seconds[0],
                 "later_epochs_s": statistics.median(seconds[1:]) if len(seconds) > 1 else None,
                 "test_acc": result["test/acc"]}
            )  # fmt: skip
    return rows
