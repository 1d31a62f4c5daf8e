"""One training step of the report network (batch 64) in the variants that closed the gap to Keras on a CPU.

    python benchmarks/step_variants.py [--rounds 4] [--steps 100]

Layout (contiguous or channels-last), where the max-pooling sits (after the ReLU, as the notebook wrote it, or before
it: the same function), and Adam's implementation (PyTorch's default for CPU tensors, a loop over the parameters,
or the fused kernel). Random data, nothing but the step; the variants are interleaved, medians over ``--rounds``
rounds of ``--steps`` steps. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def report_network(pool_first: bool) -> nn.Sequential:
    """Notebook A's layers; ``pool_first`` puts each 2x2 max-pooling before its ReLU."""

    def block() -> list[nn.Module]:
        return [nn.MaxPool2d(2), nn.ReLU()] if pool_first else [nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        nn.Conv2d(1, 32, 3), *block(), nn.Conv2d(32, 64, 3), *block(), nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(576, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
    )  # fmt: skip


def stepper(channels_last: bool, pool_first: bool, fused: bool, batch: int = 64) -> Callable[[int], float]:
    """A function that runs ``n`` training steps of the variant and returns milliseconds per step."""
    torch.manual_seed(0)
    net = report_network(pool_first)
    images, labels = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3, fused=fused)
    return step_timer(net, images, labels, optimizer)


def step_timer(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer
) -> Callable[[int], float]:
    """A function that runs ``n`` training steps of ``net`` on one batch and returns milliseconds per step; the
    first 10 steps are run here, untimed, because oneDNN picks its kernels on them."""

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            optimizer.zero_grad()
            F.cross_entropy(net(images), labels).backward()
            optimizer.step()
        return (time.perf_counter() - start) / n * 1000

    run(10)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    variants = {
        (layout, pool, adam): stepper(layout == "channels-last", pool == "before ReLU", adam == "fused")
        for layout in ("contiguous", "channels-last")
        for pool in ("after ReLU", "before ReLU")
        for adam in ("default", "fused")
    }
    times: dict[tuple[str, str, str], list[float]] = {key: [] for key in variants}
    for _ in range(args.rounds):
        for key, run in variants.items():
            times[key].append(run(args.steps))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| layout | max-pooling | Adam | ms per step |\n| --- | --- | --- | --- |")
    for (layout, pool, adam), values in times.items():
        print(f"| {layout} | {pool} | {adam} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
