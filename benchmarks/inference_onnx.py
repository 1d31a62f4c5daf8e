"""Inference speed: a checkpoint in PyTorch (eager, channels-last) beside its ONNX export in ONNX Runtime.

    python benchmarks/inference_onnx.py [--data-dir data] [--checkpoints A.ckpt B.ckpt] [--repeats 7] [--threads N]

Run from a checkout, with the package and its ``export`` extra installed (``pip install -e ".[export]"``). Both
networks, batch 1 and batch 1024, images per second, each side doing the whole deployed computation: raw pixels in
(float32, 0-255), the normalization, the network, the softmax, probabilities out. Without ``--checkpoints``, the
networks are freshly initialized (the speed does not depend on the weights). The images are MNIST's test images
from ``--data-dir`` (synthetic ones if it has none).

ONNX Runtime gets as many intra-op threads as PyTorch uses (``torch.get_num_threads()``, or ``--threads``), and its
thread pools do not spin (``session.intra_op.allow_spinning = 0``): spinning threads keep the cores busy after each
call and slow whatever runs next in the process, here the PyTorch side (microsoft/onnxruntime#13808). The two sides
are timed alternately, ``--repeats`` times each, and the medians are printed as a markdown table. Nothing here
asserts a time; on a shared machine, timings swing by tens of percent.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from mnist_lit.cli.export import verification_images
from mnist_lit.inference.torch_runner import PixelClassifier
from mnist_lit.interop.onnx import OnnxRunner, export_onnx
from mnist_lit.models import CompactCNN, KerasReportCNN
from mnist_lit.training.checkpoints import TrainedNetwork, load_trained_network

NETWORKS = {"keras_report": KerasReportCNN, "compact": CompactCNN}
#: (batch size, calls per timed run): about the same number of images per run, at least a few calls.
BATCHES = ((1, 256), (1024, 4))


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_side(trained: TrainedNetwork) -> Callable[[np.ndarray], np.ndarray]:
    """The checkpoint's network in eager PyTorch, weights and inputs channels-last, in inference mode."""
    module = PixelClassifier(trained.model.net, trained.normalization).eval().to(memory_format=torch.channels_last)

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(pixels).contiguous(memory_format=torch.channels_last)
            return module(x).numpy()

    return run


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_network(name: str, trained: TrainedNetwork, images: np.ndarray, repeats: int, threads: int) -> list[str]:
    """Table rows for one network: each batch size, PyTorch and ONNX Runtime timed in alternation."""
    with tempfile.TemporaryDirectory(prefix="mnist_lit_onnx_") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        path.write_bytes(export_onnx(trained))
        ort = OnnxRunner(path, threads=threads)
        pytorch = torch_side(trained)
        check = np.abs(ort.probabilities(images[:256]) - pytorch(images[:256])).max()
        rows = []
        for batch, calls in BATCHES:
            inputs = [images[(i * batch) % len(images) :][:batch] for i in range(calls)]
            runs = {
                "pytorch": lambda inputs=inputs: [pytorch(x) for x in inputs],
                "ort": lambda inputs=inputs: [ort.probabilities(x) for x in inputs],
            }
            for run in runs.values():  # warm-up: oneDNN and ONNX Runtime prepare their kernels on the first call
                run()
            times: dict[str, list[float]] = {side: [] for side in runs}
            for _ in range(repeats):  # alternate the sides, so that a busy moment does not favour one of them
                for side, run in runs.items():
                    times[side].append(seconds(run))
            rate = {side: batch * calls / statistics.median(t) for side, t in times.items()}
            rows.append(
                f"| {name} | {batch} | {rate['pytorch']:,.0f} | {rate['ort']:,.0f} | "
                f"{rate['ort'] / rate['pytorch']:.2f} | {check:.1e} |"
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="MNIST's folder (DATA_DIR/MNIST/raw)")
    parser.add_argument(
        "--checkpoints", nargs="*", default=[], help="checkpoints to time (default: both networks, untrained)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per side and batch size (median)")
    parser.add_argument("--threads", type=int, default=None, help="threads for both sides (default: PyTorch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.checkpoints:
        networks = {Path(c).stem: load_trained_network(c) for c in args.checkpoints}
    else:
        torch.manual_seed(0)
        networks = {
            name: TrainedNetwork(cls().eval(), "unit", Path(f"(untrained {cls.__name__})"))
            for name, cls in NETWORKS.items()
        }
    images, origin = verification_images(args.data_dir, count=1024)
    images = images.astype(np.float32)
    print(
        f"{cpu_name()} ({os.cpu_count()} cores), {threads} threads for each side; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; {origin}; median of {args.repeats} alternating runs; load average "
        f"{os.getloadavg()[0]:.1f} at the start.\n"
    )
    print("| network | batch | PyTorch eager, channels-last (images/s) | ONNX Runtime (images/s) | ORT / PyTorch "
          "| max abs diff of p |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for name, trained in networks.items():
        for row in bench_network(name, trained, images, args.repeats, threads):
            print(row, flush=True)
    print(f"\nLoad average {os.getloadavg()[0]:.1f} at the end.")


if __name__ == "__main__":
    main()
