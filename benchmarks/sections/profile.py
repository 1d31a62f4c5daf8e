"""Section ``profile``: where a training step's time goes, Lightning's per-hook times and the heaviest operators."""

from __future__ import annotations

import torch
from common import NETWORKS, MNISTTensors, PreparedDataModule, bare_step, plain_trainer


def profile_steps(data: MNISTTensors, steps: int) -> str:
    """Where a training step's time goes: Lightning's per-hook times, then the heaviest PyTorch operators."""
    from lightning.pytorch.profilers import SimpleProfiler

    reports = []
    for name, (cls, batch_size) in NETWORKS.items():
        dm = PreparedDataModule(data, batch_size)
        profiler = SimpleProfiler(extended=False)
        trainer = plain_trainer(max_steps=steps, profiler=profiler)
        model = cls()
        trainer.fit(model, datamodule=dm)
        reports.append(f"### {name}: Lightning hooks over {steps} steps\n```\n{profiler.summary()}\n```")
        images, labels = next(iter(dm.train_dataloader()))
        optimizer = model.configure_optimizers()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                bare_step(model, optimizer, dm, images, labels)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        reports.append(f"### {name}: operators over 20 bare steps\n```\n{table}\n```")
    return "\n\n".join(reports)
