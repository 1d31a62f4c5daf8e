"""MNIST in memory: a dataset that hands out whole batches, and a shuffle that a resumed run repeats exactly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler


class TensorImageDataset(Dataset):
    """Images (N x 28 x 28, uint8) and labels (N, int64) held in memory and fetched a whole batch at a time.

    ``__getitems__`` lets a standard DataLoader cut a batch with one tensor index instead of 64 ``__getitem__``
    calls and a collate, which is what makes a pass over MNIST take a fraction of a second.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"expected N x H x W uint8 images and N labels, got {tuple(images.shape)} {images.dtype}")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index].unsqueeze(0), self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, device=self.images.device)
        return self.images[index].unsqueeze(1), self.labels[index]


def take(index: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """``tensor[index]`` for each tensor, as a view (no copy) when ``index`` is a run of consecutive numbers, as
    Keras' split makes: the training images then live in memory once, not twice."""
    if len(index) and bool((index.diff() == 1).all()):
        start, stop = int(index[0]), int(index[-1]) + 1
        return tuple(t[start:stop] for t in tensors)
    return tuple(t[index] for t in tensors)


class EpochShuffleSampler(Sampler[int]):
    """A fresh random order of ``n`` indices each epoch, drawn from ``seed`` and the epoch number alone.

    A resumed run therefore shuffles epoch k exactly as the uninterrupted run did, however many times the process
    started; Lightning calls :meth:`set_epoch` before each training epoch (under DDP, its sampler wrapper shards this
    order per rank). A DataLoader's own ``shuffle=True`` would draw each epoch's order from one generator created with
    the loader, and so restart from the first epoch's order after a resume.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)  # as DistributedSampler derives its own
        return iter(torch.randperm(self.n, generator=generator).tolist())


def own_generator(seed: int) -> torch.Generator:
    """A generator for a DataLoader's own draws (its workers' base seed), so that creating a loader never consumes
    the global random state: that state drives dropout, and a resumed run restores it (see MNISTClassifier)."""
    return torch.Generator().manual_seed(seed)


def keep_batch(batch: Any) -> Any:
    """Collate function for datasets whose ``__getitems__`` already returns a batch."""
    return batch
