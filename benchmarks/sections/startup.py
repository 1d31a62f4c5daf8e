"""Section ``startup`` (fixed costs): where a short ``fit`` command's seconds go, what importing the CLI costs, and
commands that train nothing (``--help``, ``predict``, ``classify``)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import BENCH_DIR, REPO_ROOT, median_seconds

from mnist_lit.data.datamodule import MNISTDataModule

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
    python_path = os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")]))
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
    """``python -X importtime -c 'import mnist_lit.cli.lightning_cli'`` (what a Lightning command imports): the
    cumulative seconds of the heaviest top-level imports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import mnist_lit.cli.lightning_cli"],
        capture_output=True,
        text=True,
        check=True,
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
