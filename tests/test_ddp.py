"""Multi-process training and exact evaluation with Lightning's DDP on CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CONFIGS, REPO_ROOT, make_tiny_mnist

pytestmark = pytest.mark.slow

N_TEST = 53  # divisible by neither 2 nor 3: a padded shard would count some images twice


def _cli(tmp_path: Path, data_dir: Path, *args: str) -> None:
    cmd = [sys.executable, str(REPO_ROOT / "tests" / "ddp_driver.py"), str(data_dir), *args,
           "--data.data_dir", str(data_dir), "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
           "--data.eval_batch_size", "8"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def _reports(tmp_path: Path) -> list[dict]:
    runs = sorted((tmp_path / "lightning_logs" / "compact").glob("version_*"), key=lambda p: int(p.name[8:]))
    return [json.loads((run / "metrics.json").read_text()) for run in runs]


def test_ddp_fit_and_test_count_every_image_once_with_1_2_and_3_processes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make_tiny_mnist(data_dir, n_train=160, n_test=N_TEST)
    config = str(CONFIGS / "compact.yaml")
    _cli(tmp_path, data_dir, "fit", "--config", config, "--config", str(CONFIGS / "ddp.yaml"),
         "--trainer.max_epochs", "2", "--data.batch_size", "16")  # fmt: skip
    (fit,) = _reports(tmp_path)
    assert sum(map(sum, fit["confusion_matrix"])) == N_TEST
    acquisitions = (data_dir / "acquisitions.log").read_text().splitlines()
    assert acquisitions == ["rank 0", "rank 0"]  # fit's and test's prepare_data, each on one process only

    checkpoint = fit["best_checkpoint"]
    for devices in ("1", "3"):
        _cli(tmp_path, data_dir, "test", "--config", config, "--ckpt_path", checkpoint,
             "--trainer.strategy", "ddp" if devices != "1" else "auto", "--trainer.devices", devices)  # fmt: skip
    _, one, three = _reports(tmp_path)
    for report in (one, three):
        assert report["num_samples"] == N_TEST
        assert report["confusion_matrix"] == fit["confusion_matrix"]  # the same weights, the same counts
        assert report["test_acc"] == pytest.approx(fit["test_acc"], abs=1e-7)
        assert report["test_loss"] == pytest.approx(fit["test_loss"], rel=1e-5)
