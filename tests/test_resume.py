"""Stopping and resuming ``fit``: a run killed at an epoch boundary and continued ends with the same numbers, bit for
bit, as the run that never stopped; a checkpoint that does not fit the config is refused before anything changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_lit.cli import main
from mnist_lit.training.checkpoints import AtomicCheckpointIO
from tests.helpers import CONFIGS, REPO_ROOT, TinyMNIST, exit_code, runs

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SMALL = ["--data.eval_batch_size", "16", "--data.batch_size", "32"]


def fit_in_subprocess(args: list[str], tiny: TinyMNIST, stop: str) -> subprocess.CompletedProcess:
    """``python -m mnist_lit fit ARGS`` in a child process that stops itself as ``stop`` (StopAt's init args) says,
    with the tiny files accepted as MNIST's."""
    script = (
        "import sys\n"
        "from mnist_lit.data import idx\n"
        "from tests.helpers import tiny_specs\n"
        f"idx.MNIST_FILES = tiny_specs({str(tiny.data_dir)!r})\n"
        "from mnist_lit.cli import main\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", script, "fit", *args, "--trainer.callbacks+=tests.helpers.StopAt", *stop.split()],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def final_numbers(run: Path) -> dict:
    report = json.loads((run / "metrics.json").read_text())
    return {key: report[key] for key in ("test_loss", "test_acc", "confusion_matrix", "epochs_run", "geometric")}


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("compact.yaml", []),
        ("fast.yaml", []),  # one-cycle, resumed mid-way
    ],
)
def test_a_run_killed_after_an_epoch_and_resumed_ends_exactly_as_the_uninterrupted_one(
    tiny_mnist: TinyMNIST, config: str, extra: list[str]
) -> None:
    args = ["--config", str(CONFIGS / config), "--trainer.max_epochs", "3", *QUIET, *SMALL, *extra]
    main(["fit", *args])
    (uninterrupted,) = runs(Path(config).stem)

    killed = fit_in_subprocess(args, tiny_mnist, "--trainer.callbacks.epoch 2 --trainer.callbacks.signal SIGKILL")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    interrupted = runs(Path(config).stem)[-1]
    last = interrupted / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1 and not (interrupted / "metrics.json").exists()

    main(["fit", *args, "--ckpt_path", str(last)])
    assert runs(Path(config).stem) == [uninterrupted, interrupted]  # continued in its own folder, no new version
    assert final_numbers(interrupted) == final_numbers(uninterrupted)


def test_sigterm_stops_cleanly_and_early_stopping_resumes_where_it_was(tiny_mnist: TinyMNIST, tmp_path: Path) -> None:
    # An EarlyStopping whose min_delta no epoch can beat: it stops after epochs 1 and 2 fail to improve (patience 2).
    override = tmp_path / "patience.yaml"
    override.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
        "      init_args: {monitor: val/loss, mode: min, patience: 2, min_delta: 100.0}\n"
        "    - class_path: mnist_lit.callbacks.RestoreBestWeights\n"
        "checkpoint: {filename: 'best-{epoch}'}\n"
    )
    args = ["--config", str(CONFIGS / "keras_report.yaml"), "--config", str(override), *QUIET, *SMALL]
    main(["fit", *args])
    (uninterrupted,) = runs("keras_report")
    assert final_numbers(uninterrupted)["epochs_run"] == 3  # stopped early, at epoch 2 (counted from 0)

    # SIGTERM in the middle of epoch 2, with one epoch of patience used up: a clean stop that says how to continue.
    stopped = fit_in_subprocess(args, tiny_mnist, "--trainer.callbacks.epoch 2 --trainer.callbacks.signal SIGTERM "
                                "--trainer.callbacks.batch 2")  # fmt: skip
    assert stopped.returncode == 128 + signal.SIGTERM and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    interrupted = runs("keras_report")[-1]
    last = interrupted / "checkpoints" / "last.ckpt"
    assert f"--ckpt_path {last}" in stopped.stderr + stopped.stdout
    early_stopping = next(
        v for k, v in torch.load(last, weights_only=False)["callbacks"].items() if "EarlyStopping" in k
    )
    assert early_stopping["wait_count"] == 1

    main(["fit", *args, "--ckpt_path", "last"])  # the latest run of this config's name
    assert final_numbers(interrupted) == final_numbers(uninterrupted)


def test_a_checkpoint_of_another_configuration_is_refused_and_the_run_folder_left_alone(
    tiny_mnist: TinyMNIST, capsys
) -> None:
    args = ["--config", str(CONFIGS / "compact.yaml"), "--trainer.max_epochs", "1", *QUIET, *SMALL]
    main(["fit", *args])
    (run,) = runs("compact")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    last = str(run / "checkpoints" / "last.ckpt")

    for other, named in (
        (["--data.batch_size", "64"], "data.batch_size: the checkpoint has 32, the config 64"),
        (["--model.init_args.dense_units", "50"], "model.init_args.dense_units: the checkpoint has 100, the config 50"),
        (["--model", "mnist_lit.models.KerasReportCNN"], "holds a CompactCNN, but the config selects KerasReportCNN"),
    ):
        assert exit_code(["fit", *args, *other, "--ckpt_path", last]) == 1
        assert named in capsys.readouterr().err
    Path(last).write_bytes(Path(last).read_bytes()[:1000])  # a checkpoint cut short
    before[Path(last)] = Path(last).read_bytes()
    assert exit_code(["fit", *args, "--ckpt_path", last]) == 1
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert runs("compact") == [run]


def test_a_checkpoint_write_killed_half_way_leaves_the_previous_one_whole(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.ones(3)}}, path)

    def power_cut(fd: int) -> None:
        raise KeyboardInterrupt  # the write has begun, the rename has not happened

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(KeyboardInterrupt):
        writer.save_checkpoint({"epoch": 2, "state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_init_weights_starts_a_new_run_from_a_checkpoints_weights(tiny_mnist: TinyMNIST) -> None:
    args = ["--config", str(CONFIGS / "compact.yaml"), "--trainer.max_epochs", "1", *QUIET, *SMALL]
    main(["fit", *args])
    (first,) = runs("compact")
    last = first / "checkpoints" / "last.ckpt"
    main(["fit", *args, "--init_weights", str(last), "--trainer.max_epochs", "1", "--test_after_fit", "false"])
    second = runs("compact")[-1]
    assert second != first  # a new run: epochs counted from 0 again
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0


def test_an_augmented_runs_checkpoint_resumes_with_its_config_and_refuses_other_ranges() -> None:
    """The checkpoint keeps ``data.augment`` as a dict, the parsed config as a Namespace: the same ranges must match
    (accurate.yaml's ``--ckpt_path last`` was refused before), other ranges must not."""
    from jsonargparse import Namespace

    from mnist_lit.errors import CheckpointError
    from mnist_lit.training.resume import check_resumable

    ranges = {"rotation": 15.0, "zoom": 0.15, "shift": 0.1, "shear": 0.0}
    checkpoint = {"optimizer_states": [], "loops": {}, "datamodule_hyper_parameters": {"augment": ranges}}
    check_resumable("last.ckpt", checkpoint, None, {"augment": Namespace(**ranges)})
    with pytest.raises(CheckpointError, match="data.augment"):
        check_resumable("last.ckpt", checkpoint, None, {"augment": Namespace(**{**ranges, "rotation": 10.0})})


def test_a_resumed_run_keeps_rewriting_last_ckpt(tiny_mnist: TinyMNIST) -> None:
    """Resumed with --ckpt_path last, the run goes on writing checkpoints/last.ckpt (not a last-v1.ckpt beside a
    stale one), so that a second resume continues from the newest epoch."""
    config = str(CONFIGS / "keras_report.yaml")
    quiet = ["--data.data_dir", str(tiny_mnist.data_dir), "--trainer.enable_progress_bar", "false"]
    main(["fit", "--config", config, "--trainer.max_epochs", "1", "--test_after_fit", "false", *quiet])
    main(["fit", "--config", config, "--trainer.max_epochs", "2", "--ckpt_path", "last", "--test_after_fit", "false",
          *quiet])  # fmt: skip
    folder = runs("keras_report")[-1] / "checkpoints"
    assert not list(folder.glob("last-v*.ckpt"))
    assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 1
