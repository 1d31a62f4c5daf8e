"""``sweep`` and ``compare`` on tiny data: one run folder per seed, a summary whose statistics are the runs', a sweep
killed mid-way that continues where it stopped, and the comparison of two sweeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback
from scipy import stats as scipy_stats

from mnist_lit.cli import main
from mnist_lit.experiments.summary import build_summary, write_summary
from tests.helpers import CONFIGS, REPO_ROOT, TinyMNIST

TINY = [
    "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    "--data.batch_size=32", "--data.eval_batch_size=16",
]  # fmt: skip
KILL_ENV = "MNIST_LIT_TEST_KILL_RUN"


class KillInRun(Callback):
    """SIGKILL this process at the start of the second epoch of the run in the folder named by
    ``$MNIST_LIT_TEST_KILL_RUN`` (its first epoch's last.ckpt is then on disk); a no-op without that variable."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1 and Path(trainer.log_dir).name == os.environ.get(KILL_ENV):
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_sweep_runs_each_seed_in_its_folder_and_summarizes_them(tiny_mnist: TinyMNIST, capsys) -> None:
    main(["sweep", "--config", str(CONFIGS / "fast.yaml"), "--seeds", "3", *TINY])
    out = capsys.readouterr().out
    folder = Path("lightning_logs/fast/sweep_0")
    assert f"Sweep folder: {folder}" in out.splitlines()[0]
    runs = sorted(folder.glob("seed_*"))
    assert [r.name for r in runs] == ["seed_0", "seed_1", "seed_2"]
    accuracies = [json.loads((r / "metrics.json").read_text())["test_acc"] for r in runs]
    for run, seed in zip(runs, range(3), strict=True):
        assert json.loads((run / "metrics.json").read_text())["config"]["seed_everything"] == seed
    summary = json.loads((folder / "summary.json").read_text())
    assert [r["test_acc"] for r in summary["runs"]] == pytest.approx(accuracies)
    mean, sem = np.mean(accuracies), scipy_stats.sem(accuracies)
    low, high = scipy_stats.t.interval(0.95, 2, loc=mean, scale=sem) if sem > 0 else (mean, mean)
    assert summary["test_acc"]["mean"] == pytest.approx(mean)
    assert (summary["test_acc"]["ci_low"], summary["test_acc"]["ci_high"]) == pytest.approx((low, high))
    assert all(r["epochs_run"] == 2 and r["seconds"] > 0 for r in summary["runs"])
    assert (folder / "seeds.png").stat().st_size > 0
    assert out.count("summary.json after seed") == 3 and "95% CI of the mean (Student t)" in out


@pytest.mark.slow
def test_a_killed_sweep_continues_with_the_seeds_it_had_not_finished(tiny_mnist: TinyMNIST, capsys) -> None:
    args = ["sweep", "--config", str(CONFIGS / "fast.yaml"), "--seeds", "0-2", *TINY]
    args += [f"--trainer.callbacks+={__name__}.KillInRun"]
    script = (
        "from mnist_lit.data import idx\n"
        "from tests.helpers import tiny_specs\n"
        f"idx.MNIST_FILES = tiny_specs({str(tiny_mnist.data_dir)!r})\n"
        "from mnist_lit.cli.dispatch import entry_point\n"
        "entry_point()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), KILL_ENV: "seed_1"}
    killed = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    folder = Path("lightning_logs/fast/sweep_0")
    assert [r["seed"] for r in json.loads((folder / "summary.json").read_text())["runs"]] == [0]
    assert (folder / "seed_1/checkpoints/last.ckpt").is_file() and not (folder / "seed_2").exists()
    first = (folder / "seed_0/metrics.json").stat().st_mtime_ns

    main([*args, "--sweep_dir", str(folder)])
    out = capsys.readouterr().out
    assert "Seed 0: finished before, skipped." in out
    assert f"Seed 1: resuming from {folder / 'seed_1/checkpoints/last.ckpt'}" in out and "Seed 2: fit in" in out
    assert (folder / "seed_0/metrics.json").stat().st_mtime_ns == first
    summary = json.loads((folder / "summary.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [0, 1, 2] and summary["test_acc"]["n"] == 3
    assert json.loads((folder / "seed_1/metrics.json").read_text())["epochs_run"] == 2
    assert not list(Path("lightning_logs/fast").glob("sweep_1"))


def test_continuing_a_sweep_with_other_options_is_refused(tiny_mnist: TinyMNIST, capsys) -> None:
    folder = Path("sweep")
    write_summary(folder, build_summary(["fast.yaml"], ["--trainer.max_epochs=2"], [0, 1], []))
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--sweep_dir", str(folder), "--trainer.max_epochs=3"])
    assert exc.value.code == 1
    assert "was run with fit options ['--trainer.max_epochs=2']" in capsys.readouterr().err


def _summary(folder: Path, accuracies: list[float]) -> Path:
    rows = [{"seed": i, "run_dir": f"seed_{i}", "test_acc": a, "test_loss": 0.1, "epochs_run": 1, "seconds": 1.0}
            for i, a in enumerate(accuracies)]  # fmt: skip
    return write_summary(folder, build_summary(["x.yaml"], [], list(range(len(accuracies))), rows))


def test_compare_prints_the_difference_its_interval_and_welchs_p_value(tmp_path: Path, capsys) -> None:
    a, b = [0.9910, 0.9902, 0.9921, 0.9915, 0.9908], [0.9915, 0.9920, 0.9911, 0.9930, 0.9917]
    main(["compare", str(_summary(tmp_path / "a", a).parent), str(_summary(tmp_path / "b", b))])
    out = capsys.readouterr().out
    welch = scipy_stats.ttest_ind(b, a, equal_var=False)
    interval = welch.confidence_interval(0.95)
    assert f"Welch's t-test p = {welch.pvalue:.3g}" in out
    assert f"(95% CI {interval.low * 100:+.3f}% to {interval.high * 100:+.3f}%, Welch)" in out
    assert f"B - A: {(np.mean(b) - np.mean(a)) * 100:+.3f}%" in out
    assert out.strip().splitlines()[-1] == (
        f"B is higher than A by {(np.mean(b) - np.mean(a)) * 100:.3g}%; with 5 seeds each this is "
        f"{'not distinguishable from seed noise' if welch.pvalue >= 0.05 else 'unlikely to be seed noise alone'} "
        f"(p = {welch.pvalue:.2g})."
    )


def test_compare_of_identical_sweeps_says_not_distinguishable(tmp_path: Path, capsys) -> None:
    same = _summary(tmp_path / "a", [0.99, 0.991, 0.9905])
    main(["compare", str(same), str(same)])
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith("A and B have the same mean; with 3 seeds each this is not distinguishable from seed noise (p = 1).")
    )


def test_compare_needs_two_seeds_a_side(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(_summary(tmp_path / "a", [0.99])), str(_summary(tmp_path / "b", [0.99, 0.98]))])
    assert exc.value.code == 1 and "at least 2 a side" in capsys.readouterr().err
