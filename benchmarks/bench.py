"""Benchmarks: the data path, Lightning's overhead, inference, memory and time to accuracy.

    python benchmarks/bench.py                      # data, train, overhead, infer, tta on the real MNIST
    python benchmarks/bench.py --only compile       # some sections; compile and profile run only when asked
    python benchmarks/bench.py --only gpu           # on a CUDA device: variants of the notebook epochs, fast.yaml
    python benchmarks/bench.py --smoke --only ...   # tiny synthetic data and sizes: keeps this script working (CI)

Run from a checkout, with the package installed (editable or not): it reads ``configs/`` beside this folder.

Prints markdown tables and writes them, with the machine they came from, as JSON (``--out``). Timings on a
shared machine swing by tens of percent, so the sides of each comparison are interleaved and repeated, and medians
are reported. Nothing here asserts a time.

This file is the runner: options, machine, tables, JSON. Each section is one module of ``sections/`` (what it
measures is in its docstring); what they share is in ``common.py``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torchvision
from common import REPO_ROOT, real_mnist, synthetic_mnist
from sections.compile import bench_compile
from sections.data import bench_data
from sections.gpu import bench_gpu_epochs, bench_gpu_to_99, no_gpu
from sections.inference import bench_inference
from sections.keras import bench_keras, bench_keras_to_99, keras_python
from sections.overhead import bench_overhead
from sections.profile import profile_steps
from sections.roofline import bench_roofline
from sections.startup import bench_startup
from sections.time_to_accuracy import bench_time_to_accuracy
from sections.train import bench_training

from mnist_lit.utils.allocator import retain_heap
from mnist_lit.utils.io import atomic_write_bytes

SECTIONS = (
    "data", "train", "overhead", "infer", "tta", "keras", "keras_to_99", "startup", "compile", "profile", "gpu",
    "roofline",
)  # fmt: skip
DEFAULT_SECTIONS = (
    "data",
    "train",
    "overhead",
    "infer",
    "tta",
)  # compile, profile, gpu, roofline: long, verbose, a GPU


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "lightning": pl.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
    }  # fmt: skip


def markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of ``rows`` (floats to 3 significant digits)."""
    if not rows:
        return "(nothing measured)"
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(fmt(row.get(k)) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen benchmark sections, print their tables and write the JSON."""
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default=",".join(DEFAULT_SECTIONS), help=f"comma-separated, from: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where MNIST is (or is acquired to)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per measurement (median reported)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training run (the first is not timed)")
    parser.add_argument("--train-repeats", type=int, default=3, help="interleaved bare/fit/configured triples")
    parser.add_argument("--configs", default="configs/fast.yaml", help="comma-separated configs for `tta`")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds for `tta` (default: as configured)")
    parser.add_argument("--keras-python", default=None, help="an interpreter with TensorFlow, for `keras`")
    parser.add_argument("--no-bf16", action="store_true", help="`keras`: leave out the bf16 autocast runs (slow here)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default bench_results/<time>.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic data and sizes, to check it runs")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (the first epoch, which includes warm-up, is not timed)")
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    retain_heap()  # as `python -m mnist_lit` does, so that fits in this process run as the command's would
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = args.out or Path("bench_results") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results: dict[str, Any] = {"machine": machine(), "smoke": args.smoke}
    print(f"machine: {json.dumps(results['machine'])}")

    with tempfile.TemporaryDirectory(prefix="mnist_lit_bench_data_") as tmp:
        needs_data = sections & {"data", "train", "overhead", "compile", "profile", "roofline"}
        if "gpu" in sections and (torch.cuda.is_available() or args.smoke):
            needs_data.add("gpu")
        data = None
        if needs_data:
            data = synthetic_mnist(Path(tmp)) if args.smoke else real_mnist(args.data_dir)
        repeats, train_repeats = (1, 1) if args.smoke else (args.repeats, args.train_repeats)

        def section(name: str, title: str, rows: Any) -> None:
            """Print a section and write the JSON so far, so an interrupted run keeps what it measured."""
            results[name] = rows
            print(f"\n## {title}\n" + (rows if isinstance(rows, str) else markdown(rows)))
            atomic_write_bytes(out, (json.dumps(results, indent=2) + "\n").encode())

        if "data" in sections:
            section("data", "Data: one pass over the training images, batch 64", bench_data(data, repeats))
        if "train" in sections:
            rows = bench_training(data, train_repeats, args.epochs, device)
            section("train", "Training: seconds per epoch of training steps, against a bare loop", rows)
        if "overhead" in sections:
            rows = bench_overhead(data, repeats, device)
            section("overhead", "Lightning's cost per training step (a one-layer network)", rows)
        if "compile" in sections:
            rows = bench_compile(data, epochs=2 if args.smoke else 3)
            section("compile", "torch.compile on configs/fast.yaml's training", rows)
        if "gpu" in sections and "gpu" not in needs_data:
            section("gpu", "GPU", no_gpu())
        elif "gpu" in sections:
            rows = bench_gpu_epochs(data, args.smoke)
            section("gpu", "GPU: the notebook epochs by variant, seconds per epoch", rows)
            rows = bench_gpu_to_99(data, repeats, args.smoke)
            section("gpu_to_99", "GPU: configs/fast.yaml's whole fit, fp32 and bf16-mixed", rows)
        if "infer" in sections:
            section("infer", "Inference: images per second", bench_inference(repeats, device))
        if "roofline" in sections:
            rows = bench_roofline(data, steps=10 if args.smoke else 200, repeats=repeats)
            section("roofline", "Where a notebook step's time goes, layer by layer, against the CPU's peak", rows)
        if "profile" in sections:
            section("profile", "Profile", profile_steps(data, steps=10 if args.smoke else 200))
        if "tta" in sections and not args.smoke:
            seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
            rows = bench_time_to_accuracy([REPO_ROOT / c for c in args.configs.split(",")], seeds, args.data_dir)
            section("tta", "Time to accuracy: `fit` as a user runs it, in a fresh process", rows)
        if {"keras", "keras_to_99"} & set(sections) and not args.smoke:
            python, why_not = keras_python(args.keras_python)
            if python is None:
                section("keras", "The notebooks' Keras code against mnist_lit", why_not)
            elif "keras" in sections:
                rows = bench_keras(python, args.data_dir, repeats=min(repeats, 2), bf16=not args.no_bf16)
                section("keras", "The notebooks' Keras code against mnist_lit: seconds per epoch", rows)
            if python is not None and "keras_to_99" in sections:
                rows = bench_keras_to_99(python, args.data_dir, REPO_ROOT / "configs" / "fast.yaml", repeats)
                section("keras_to_99", "Time to 99%: notebook A's Keras code against configs/fast.yaml", rows)
        if "startup" in sections and not args.smoke:
            rows = bench_startup(args.data_dir, repeats)
            section("startup", "Fixed costs: where a short fit's seconds go, and commands that train nothing", rows)
    results["peak_rss_mib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        results["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    atomic_write_bytes(out, (json.dumps(results, indent=2) + "\n").encode())
    print(f"\npeak RSS of the benchmark process: {results['peak_rss_mib_this_process']:.0f} MiB; wrote {out}")
    return results


if __name__ == "__main__":
    main()
