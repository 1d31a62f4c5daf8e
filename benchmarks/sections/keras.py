"""Sections ``keras`` and ``keras_to_99``: the notebooks' own Keras code (``benchmarks/keras_notebooks.py``, run by an
interpreter with TensorFlow) against mnist_lit's configs of the same networks."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import BENCH_DIR, REPO_ROOT, run_fit

KERAS_NOTEBOOKS = {"compact": "compact", "keras_report": "report"}  # our config: the notebook's name in the script
PRECISIONS = {"fp32": (), "bf16": ("--trainer.precision", "bf16-mixed")}


def run_keras_notebook(python: str, notebook: str, data_dir: Path, *args: str) -> dict[str, Any]:
    """``benchmarks/keras_notebooks.py`` in a fresh process of ``python``; its JSON line, and the wall time."""
    cmd = [python, str(BENCH_DIR / "keras_notebooks.py"), "--notebook", notebook,
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


def bench_keras(python: str, data_dir: Path, repeats: int, epochs: int = 3, bf16: bool = True) -> list[dict[str, Any]]:
    """Seconds per epoch, validation included, of each notebook's Keras code and of our config of the same network,
    batch size and optimizer, in fp32 and with bf16 autocast, each side timed by its own epoch clock (a Keras
    callback; ``metrics.json``'s ``seconds_per_epoch``), the first epoch left out (graph tracing, kernel choice).
    Whole ``epochs``-epoch processes, interleaved; medians over ``repeats``, except bf16, run in the first round only
    (emulated on CPUs without AVX-512 BF16 or AMX, it is slow there; ``bf16=False`` leaves it out). Test accuracy
    after ``epochs``."""
    precisions = PRECISIONS if bf16 else {"fp32": PRECISIONS["fp32"]}
    rows = []
    for config, notebook in KERAS_NOTEBOOKS.items():
        per_epoch: dict[str, list[float]] = {k: [] for k in ("keras", *precisions)}
        wall: dict[str, list[float]] = {k: [] for k in per_epoch}
        acc: dict[str, list[float]] = {k: [] for k in per_epoch}
        for round_ in range(repeats):  # interleaved, so that drifting machine load hits all sides alike
            run = run_keras_notebook(python, notebook, data_dir, "--epochs", str(epochs))
            per_epoch["keras"].append(statistics.median(run["epoch_s"][1:]))
            wall["keras"].append(run["wall_s"])
            acc["keras"].append(run["test_acc"])
            for precision, overrides in precisions.items():
                if precision != "fp32" and round_ > 0:
                    continue
                ours = run_fit(REPO_ROOT / "configs" / f"{config}.yaml", data_dir,
                               "--trainer.max_epochs", str(epochs), *overrides)  # fmt: skip
                per_epoch[precision].append(statistics.median(ours["seconds_per_epoch"][1:]))
                wall[precision].append(ours["wall_s_from_process_start"])
                acc[precision].append(ours["test_acc"])
        s = {k: statistics.median(v) for k, v in per_epoch.items()}
        row: dict[str, Any] = {"network": config, "keras_s_per_epoch": s["keras"]}
        for precision in precisions:
            row |= {f"{precision}_s_per_epoch": s[precision], f"{precision}_ratio": s[precision] / s["keras"]}
        row |= {f"{k}_acc": statistics.median(v) for k, v in acc.items()}
        row |= {f"{k}_wall_s": statistics.median(v) for k, v in wall.items()}
        rows.append({**row, "epochs": epochs, "repeats": repeats})
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
