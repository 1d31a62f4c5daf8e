"""Section ``infer``: images per second in eval mode at batch 1 and batch 1024, contiguous and channels-last."""

from __future__ import annotations

from typing import Any

import torch
from bench_timing import wait_for_device
from common import NETWORKS, median_seconds
from torch import Tensor

from mnist_lit.models import MNISTClassifier


def bench_inference(repeats: int, device: torch.device) -> list[dict[str, Any]]:
    """Images per second in eval mode at batch 1 and batch 1024, in fp32 and channels-last."""
    rows = []
    for name, (cls, _) in NETWORKS.items():
        for channels_last in (False, True):
            model = cls(channels_last=channels_last).to(device).eval()
            for batch, steps in ((1, 300), (1024, 8)):
                x = torch.rand(batch, 1, 28, 28, device=device)

                def run(model: MNISTClassifier = model, x: Tensor = x, steps: int = steps) -> None:
                    with torch.inference_mode():
                        for _ in range(steps):
                            model(x)
                    wait_for_device(device)

                run()  # warm-up
                seconds = median_seconds(run, repeats)
                rows.append(
                    {"network": name, "layout": "channels_last" if channels_last else "contiguous", "batch": batch,
                     "images_per_s": batch * steps / seconds}
                )  # fmt: skip
    return rows
