"""Benchmarks: the data path, Lightning's overhead, inference, memory and time to accuracy.

    python benchmarks/bench.py                      # data, train, overhead, infer, tta on the real MNIST
    python benchmarks/bench.py --only compile       # some sections; compile and profile run only when asked
    python benchmarks/bench.py --smoke --only ...   # tiny synthetic data and sizes: keeps this script working (CI)

Run from a checkout, with the package installed (editable or not): it reads ``configs/`` beside this folder.

Prints markdown tables and writes them, with the machine they came from, as JSON (``--out``). Timings on a
shared machine swing by tens of percent, so the sides of each comparison are interleaved and repeated, and medians
are reported. Nothing here asserts a time."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from bench_timing import TrainingPassTimer, wait_for_device
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, ProgressBar, TQDMProgressBar
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.datasets import MNIST
from torchvision.transforms import ToTensor

from mnist_lit.cli.lightning_cli import PROGRESS_BAR_REFRESH_RATE, MNISTLitCLI, build_cli
from mnist_lit.data.datamodule import MNISTDataModule, TensorImageDataset
from mnist_lit.data.files import encode_idx
from mnist_lit.models import CompactCNN, KerasReportCNN, MNISTClassifier
from mnist_lit.utils.io import atomic_write_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("data", "train", "overhead", "infer", "tta", "keras", "keras_to_99", "startup", "compile", "profile")
DEFAULT_SECTIONS = ("data", "train", "overhead", "infer", "tta")  # compile and profile take long or print much
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


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Send what is printed to stdout and stderr (progress bars, test results) to /dev/null.

    Lightning's own log lines still show: its logging handler keeps the stream it was given at import.
    """
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


def configured_epoch_seconds(config: Path, dm: MNISTDataModule, epochs: int, log_dir: Path) -> list[float]:
    """A notebook config's own Trainer and network, built by the CLI: its callbacks, TensorBoard logger, checkpoints
    and progress bar (drawn into /dev/null), with validation; the training passes timed."""
    with quietly():
        cli = configured(config, log_dir, "--trainer.max_epochs", str(epochs))
        cli.trainer.fit(cli.model, datamodule=dm)
    return pass_timer(cli.trainer).seconds


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


def _span(values: list[float]) -> str:
    """``min-max`` of ratios, for the table."""
    return f"{min(values):.2f}-{max(values):.2f}"


def linear_probe() -> MNISTClassifier:
    """A one-layer network (784 to 10) on mnist_lit's training step: its arithmetic is negligible, so the time of its
    steps is the loop's own."""
    return MNISTClassifier(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))


#: What the overhead section adds to a plain Trainer: name, callbacks (given a scratch folder), how many of them.
OVERHEAD_ADDITIONS: list[tuple[str, Callable[[Path], list[Callback]], int]] = [
    ("a callback that does nothing (each of 10)", lambda _: [Callback() for _ in range(10)], 10),
    ("ModelCheckpoint", lambda tmp: [ModelCheckpoint(dirpath=tmp, monitor="train/loss")], 1),
    ("EarlyStopping", lambda _: [EarlyStopping(monitor="train/loss", check_on_train_epoch_end=True)], 1),
    ("TQDM progress bar, redrawn every step (Lightning's default)", lambda _: [TQDMProgressBar(1)], 1),
    (f"TQDM progress bar, redrawn every {PROGRESS_BAR_REFRESH_RATE} steps (mnist_lit's default)",
     lambda _: [TQDMProgressBar(PROGRESS_BAR_REFRESH_RATE)], 1),
]  # fmt: skip


def bench_overhead(data: MNISTTensors, repeats: int, device: torch.device) -> list[dict[str, Any]]:
    """Lightning's cost per training step, apart from the arithmetic.

    The linear probe trains for one timed epoch (batch 128) in a bare loop, under a plain Trainer, and under a plain
    Trainer with each of ``OVERHEAD_ADDITIONS``; the differences are the Trainer's, the callbacks' and our training
    step's own Python. Medians over ``repeats`` interleaved rounds.
    """
    dm = PreparedDataModule(data, batch_size=128)
    steps = -(-len(data.train_labels) // 128)
    bare: list[float] = []
    plain: list[float] = []
    added: dict[str, list[float]] = {name: [] for name, _, _ in OVERHEAD_ADDITIONS}
    for _ in range(repeats):
        bare.append(bare_epoch_seconds(linear_probe(), dm, 2, device)[1])
        plain.append(plain_fit_seconds(linear_probe(), dm, 2)[1])
        for name, callbacks, _ in OVERHEAD_ADDITIONS:
            with tempfile.TemporaryDirectory(prefix="mnist_lit_bench_") as tmp:
                added[name].append(plain_fit_seconds(linear_probe(), dm, 2, callbacks(Path(tmp)))[1])
    plain_s = statistics.median(plain)
    rows = [
        {"added": "a plain Trainer (hooks, closure, optimizer wrapper, our step's metric updates)",
         "over": "a bare loop", "us_per_step": (plain_s - statistics.median(bare)) / steps * 1e6}
    ]  # fmt: skip
    for name, _, count in OVERHEAD_ADDITIONS:
        seconds = (statistics.median(added[name]) - plain_s) / count
        rows.append({"added": name, "over": "a plain Trainer", "us_per_step": seconds / steps * 1e6})
    return rows


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


def bench_time_to_accuracy(configs: list[Path], seeds: list[int] | None, data_dir: Path) -> list[dict[str, Any]]:
    """Each config's whole ``fit`` command, as shipped or once per seed (``--seed_everything`` and ``--data.seed``)."""
    rows = []
    for config in configs:
        for seed in seeds if seeds is not None else [None]:
            overrides = () if seed is None else ("--seed_everything", str(seed), "--data.seed", str(seed))
            row = run_fit(config, data_dir, *overrides)
            rows.append({"config": row["config"], "seed": "as shipped" if seed is None else seed,
                         "test_acc": row["test_acc"], "epochs": row["epochs"], "fit_s": row["fit_s"],
                         "wall_s": row["wall_s_from_process_start"], "peak_rss_mib": row["peak_rss_mib"]})  # fmt: skip
    return rows


def run_keras_notebook(python: str, notebook: str, data_dir: Path, *args: str) -> dict[str, Any]:
    """``benchmarks/keras_notebooks.py`` in a fresh process of ``python``; its JSON line, and the wall time."""
    cmd = [python, str(Path(__file__).with_name("keras_notebooks.py")), "--notebook", notebook,
           "--data-dir", str(data_dir.resolve()), *args]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": wall}


def keras_python(python: str | None) -> tuple[str | None, str]:
    """The interpreter to run the notebooks' Keras code with, or None and why not."""
    python = python or sys.executable
    probe = subprocess.run([python, "-c", "import tensorflow, keras"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, (
            f"skipped: TensorFlow is not importable by {python}. Make an environment for it "
            "(`python -m venv .tf && .tf/bin/pip install tensorflow-cpu tensorboard`) and pass "
            "`--keras-python .tf/bin/python`."
        )
    return python, ""


KERAS_NOTEBOOKS = {"compact": "compact", "keras_report": "report"}  # our config: the notebook's name in the script
PRECISIONS = {"fp32": (), "bf16": ("--trainer.precision", "bf16-mixed")}


def bench_keras(python: str, data_dir: Path, repeats: int, epochs: int = 3) -> list[dict[str, Any]]:
    """Seconds per epoch, validation included, of each notebook's Keras code and of our config of the same network,
    batch size and optimizer, in fp32 and with bf16 autocast, each side timed by its own epoch clock (a Keras
    callback; ``metrics.json``'s ``seconds_per_epoch``), the first epoch left out (graph tracing, kernel choice).
    Whole ``epochs``-epoch processes, interleaved; medians over ``repeats``, except bf16, run in the first round only
    (emulated on CPUs without AVX-512 BF16 or AMX, it is slow there). Test accuracy after ``epochs``."""
    rows = []
    for config, notebook in KERAS_NOTEBOOKS.items():
        per_epoch: dict[str, list[float]] = {k: [] for k in ("keras", *PRECISIONS)}
        wall: dict[str, list[float]] = {k: [] for k in per_epoch}
        acc: dict[str, list[float]] = {k: [] for k in per_epoch}
        for round_ in range(repeats):  # interleaved, so that drifting machine load hits all sides alike
            run = run_keras_notebook(python, notebook, data_dir, "--epochs", str(epochs))
            per_epoch["keras"].append(statistics.median(run["epoch_s"][1:]))
            wall["keras"].append(run["wall_s"])
            acc["keras"].append(run["test_acc"])
            for precision, overrides in PRECISIONS.items():
                if precision != "fp32" and round_ > 0:
                    continue
                ours = run_fit(REPO_ROOT / "configs" / f"{config}.yaml", data_dir,
                               "--trainer.max_epochs", str(epochs), *overrides)  # fmt: skip
                per_epoch[precision].append(statistics.median(ours["seconds_per_epoch"][1:]))
                wall[precision].append(ours["wall_s_from_process_start"])
                acc[precision].append(ours["test_acc"])
        s = {k: statistics.median(v) for k, v in per_epoch.items()}
        rows.append(
            {"network": config, "keras_s_per_epoch": s["keras"],
             "fp32_s_per_epoch": s["fp32"], "fp32_ratio": s["fp32"] / s["keras"],
             "bf16_s_per_epoch": s["bf16"], "bf16_ratio": s["bf16"] / s["keras"],
             "keras_acc": statistics.median(acc["keras"]), "fp32_acc": statistics.median(acc["fp32"]),
             "bf16_acc": statistics.median(acc["bf16"]),
             **{f"{k}_wall_s": statistics.median(v) for k, v in wall.items()}, "epochs": epochs, "repeats": repeats}
        )  # fmt: skip
    return rows


def bench_keras_to_99(python: str, data_dir: Path, config: Path, repeats: int) -> list[dict[str, Any]]:
    """Process start to exit: the report notebook's Keras code trained until its test accuracy first reaches 99%,
    against ``config``'s whole ``fit`` command; interleaved, medians over ``repeats``."""
    keras_runs, ours = [], []
    for _ in range(repeats):
        keras_runs.append(run_keras_notebook(python, "report", data_dir, "--until", "0.99"))
        ours.append(run_fit(config, data_dir))
    keras_s = statistics.median(r["wall_s"] for r in keras_runs)
    ours_s = statistics.median(r["wall_s_from_process_start"] for r in ours)
    return [
        {"run": "notebook A's Keras code until 99% test accuracy", "wall_s": keras_s,
         "epochs": statistics.median(r["epochs_run"] for r in keras_runs),
         "test_acc": statistics.median(r["test_acc"] for r in keras_runs), "ratio": 1.0},
        {"run": f"`fit --config {ours[0]['config']}`", "wall_s": ours_s, "epochs": ours[0]["epochs"],
         "test_acc": statistics.median(r["test_acc"] for r in ours), "ratio": ours_s / keras_s},
    ]  # fmt: skip


PHASES = (  # (from, to, what happens between), the moments PhaseClock records, plus the process' start and exit
    ("start", "built", "Python starts, imports; the config is parsed, the model and callbacks are built"),
    ("built", "fit_data_ready", "the Trainer starts; the data files are checked and loaded"),
    ("fit_data_ready", "first_step", "model summary, logger, optimizer, the training-samples figure"),
    ("first_step", "last_step_done", "training: every step"),
    ("last_step_done", "fit_done", "end of fit: the last checkpoint, the fit's figures"),
    ("fit_done", "test_start", "test set-up: the data check, the best weights"),
    ("test_start", "test_end", "the test pass, its figures and metrics.json"),
    ("test_end", "exit", "the writers closed, the process' exit"),
)


def timed_command(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of ``cmd`` from spawn to exit; raises if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")
    return seconds


def fit_phases(config: Path, data_dir: Path, log_dir: Path, *overrides: str) -> dict[str, float]:
    """Seconds of each of :data:`PHASES` in one ``fit`` command, timed by :class:`bench_timing.PhaseClock`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    phases_file = log_dir / "phases.json"
    python_path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "MNIST_LIT_PHASES": str(phases_file)}
    cmd = [
        sys.executable, "-m", "mnist_lit", "fit", "--config", str(config), "--data.data_dir", str(data_dir.resolve()),
        "--trainer.logger.init_args.save_dir", str(log_dir), "--trainer.callbacks+=bench_timing.PhaseClock", *overrides,
    ]  # fmt: skip
    start = time.time()
    timed_command(cmd, env)
    moments = {"start": start, **json.loads(phases_file.read_text()), "exit": time.time()}
    return {what: moments[end] - moments[begin] for begin, end, what in PHASES}


def import_seconds() -> list[dict[str, Any]]:
    """``python -X importtime -c 'import mnist_lit.cli'``: the cumulative seconds of the heaviest top-level imports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import mnist_lit.cli"], capture_output=True, text=True, check=True
    )
    cumulative: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum, name = line.split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1:
            cumulative[name.strip()] = max(cumulative.get(name.strip(), 0.0), int(cum) / 1e6)
    heaviest = sorted(cumulative.items(), key=lambda kv: -kv[1])[:6]
    return [{"what": f"import {name}", "seconds": seconds} for name, seconds in heaviest]


def bench_startup(data_dir: Path, repeats: int, *overrides: str) -> list[dict[str, Any]]:
    """Where a short ``fit`` command's seconds go (``configs/fast.yaml`` and ``overrides``, medians over
    ``repeats``), what importing the CLI costs, and commands that train nothing: the top-level ``--help``, and
    ``predict`` and ``classify`` (with the checkpoint, and with its ONNX export) on one image."""
    config = REPO_ROOT / "configs" / "fast.yaml"
    with tempfile.TemporaryDirectory(prefix="mnist_lit_bench_startup_") as tmp:
        runs = [fit_phases(config, data_dir, Path(tmp) / f"run{i}", *overrides) for i in range(repeats)]
        rows = [{"what": what, "seconds": statistics.median(r[what] for r in runs)} for _, _, what in PHASES]
        rows.append({"what": "the whole `fit` command", "seconds": statistics.median(sum(r.values()) for r in runs)})
        rows += import_seconds()
        help_cmd = [sys.executable, "-m", "mnist_lit", "--help"]
        rows.append({"what": "`python -m mnist_lit --help`", "seconds": median_seconds(
            lambda: timed_command(help_cmd), repeats)})  # fmt: skip
        checkpoint = next(Path(tmp).rglob("last.ckpt"))
        image = Path(tmp) / "digit.png"
        test_images = MNISTDataModule(data_dir=data_dir, val_split="test")
        test_images.prepare_data()
        test_images.setup("test")
        from PIL import Image

        Image.fromarray(test_images.data_test.images[0].numpy()).save(image)
        predict_cmd = [
            sys.executable, "-m", "mnist_lit", "predict", "--config", str(config), "--ckpt_path", str(checkpoint),
            "--data.data_dir", str(data_dir.resolve()), "--data.predict_path", str(image),
            "--trainer.logger.init_args.save_dir", str(Path(tmp) / "predict"),
        ]  # fmt: skip
        rows.append({"what": "`predict` on one image", "seconds": median_seconds(
            lambda: timed_command(predict_cmd), repeats)})  # fmt: skip
        classify = [sys.executable, "-m", "mnist_lit", "classify", str(image), "--ckpt_path"]
        rows.append({"what": "`classify` on one image, the checkpoint", "seconds": median_seconds(
            lambda: timed_command([*classify, str(checkpoint)]), repeats)})  # fmt: skip
        onnx_file = Path(tmp) / "fast.onnx"
        export = [sys.executable, "-m", "mnist_lit", "export", "--ckpt_path", str(checkpoint),
                  "--output", str(onnx_file), "--data_dir", str(data_dir.resolve())]  # fmt: skip
        try:
            timed_command(export)
        except RuntimeError as err:  # the export extra (onnx, onnxscript, onnxruntime) is not installed
            print(f"startup: no ONNX row: {str(err).splitlines()[-1]}", file=sys.stderr)
        else:
            rows.append({"what": "`classify` on one image, the ONNX export", "seconds": median_seconds(
                lambda: timed_command([*classify, str(onnx_file)]), repeats)})  # fmt: skip
    return rows


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
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default bench_results/<time>.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic data and sizes, to check it runs")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (the first epoch, which includes warm-up, is not timed)")
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = args.out or Path("bench_results") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results: dict[str, Any] = {"machine": machine(), "smoke": args.smoke}
    print(f"machine: {json.dumps(results['machine'])}")

    with tempfile.TemporaryDirectory(prefix="mnist_lit_bench_data_") as tmp:
        needs_data = sections & {"data", "train", "overhead", "compile", "profile"}
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
        if "infer" in sections:
            section("infer", "Inference: images per second", bench_inference(repeats, device))
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
                rows = bench_keras(python, args.data_dir, repeats=min(repeats, 2))
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
