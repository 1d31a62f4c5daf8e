"""Section ``data``: one pass over the training images as float batches, mnist_lit's way against torchvision's."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from common import MNISTTensors, PreparedDataModule, median_seconds
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.datasets import MNIST
from torchvision.transforms import ToTensor


def _consume(batches: Iterable[tuple[Tensor, Tensor]], convert: Callable[[Tensor], Tensor]) -> None:
    for images, _ in batches:
        convert(images)


def bench_data(data: MNISTTensors, repeats: int, batch_size: int = 64) -> list[dict[str, Any]]:
    """One pass over the training images, as float batches, our way and torchvision's way."""
    ours = PreparedDataModule(data, batch_size)
    reference = MNIST(str(data.torchvision_root), train=True, download=False, transform=ToTensor())
    n = len(data.train_labels)
    paths = {
        "mnist_lit: in-memory uint8, batch indexing, float on device": lambda: _consume(
            ours.train_dataloader(), ours.normalize
        ),
        "torchvision MNIST + ToTensor, DataLoader, num_workers=0": lambda: _consume(
            DataLoader(reference, batch_size=batch_size, shuffle=True, num_workers=0), lambda x: x
        ),
        "torchvision MNIST + ToTensor, DataLoader, num_workers=2": lambda: _consume(
            DataLoader(reference, batch_size=batch_size, shuffle=True, num_workers=2), lambda x: x
        ),
    }
    rows = [{"path": name, "seconds": median_seconds(fn, repeats)} for name, fn in paths.items()]
    baseline = rows[1]["seconds"]
    for row in rows:
        row["images_per_s"] = n / row["seconds"]
        row["speedup_vs_torchvision"] = baseline / row["seconds"]
    return rows
