"""What a run needs from the machine, refused before anything runs with one message naming the option: a GPU that
is not there, and each option naming a folder to write into when that folder cannot be written or made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace

from mnist_lit.cli import preflight
from mnist_lit.utils.folders import unwritable_reason
from tests.helpers import CONFIGS, REPO_ROOT, TinyMNIST, error_message, exit_code

COMPACT = ["fit", "--config", str(CONFIGS / "compact.yaml")]
NO_GPU = not torch.cuda.is_available() and not torch.backends.mps.is_available()
#: A folder that cannot be made, even by root: procfs refuses new entries (Linux).
PROC = Path("/proc/nodata")
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc here")


def blocked() -> Path:
    """A folder that cannot be made by anyone: its parent is a file."""
    Path("a_file").write_text("not a folder\n")
    return Path("a_file/runs")


def refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one message a run that must not start prints (exit status 1), checked to be one line."""
    assert exit_code(args) == 1
    err = capsys.readouterr().err
    message = error_message(err).strip()
    assert "\n" not in message and "Traceback" not in err, err
    return message


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_accelerator_gpu_without_a_gpu_is_one_message_from_a_real_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mnist_lit", *COMPACT, "--trainer.accelerator", "gpu"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "MisconfigurationException" not in done.stderr
    message = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1, done.stderr[-2000:]
    assert "--trainer.accelerator gpu: there is no GPU here: torch " in message[0]
    assert "Drop --trainer.accelerator gpu" in message[0]


def test_what_torch_sees_names_the_build_and_the_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(preflight.UserError) as err:
        preflight.check_accelerator("cuda")
    assert "no CUDA GPU here: torch " in str(err.value)
    assert "built for CUDA 13.0, finds no CUDA device (CUDA_VISIBLE_DEVICES='')" in str(err.value)
    preflight.check_accelerator("cpu")
    preflight.check_accelerator("auto")


@needs_proc
def test_a_data_dir_that_cannot_be_made_is_one_message(capsys) -> None:
    err = refused([*COMPACT, "--data.data_dir", str(PROC)], capsys)
    assert f"--data.data_dir {PROC}: the MNIST files are fetched into {PROC}/MNIST/raw, but it does not exist" in err
    assert "/proc refuses new entries" in err


def test_a_data_dir_holding_the_files_is_not_asked_to_be_writable(tiny_mnist: TinyMNIST, monkeypatch) -> None:
    """A shared, read-only copy of MNIST is fine: only a folder the files must be fetched into has to be writable."""
    monkeypatch.setattr(preflight, "unwritable_reason", lambda folder: "it is read-only")
    preflight.check_data_dir(Namespace(data_dir=str(tiny_mnist.data_dir)), "fit")
    with pytest.raises(preflight.UserError, match=r"--data.data_dir elsewhere: the MNIST files are fetched into"):
        preflight.check_data_dir(Namespace(data_dir="elsewhere"), "fit")


@pytest.mark.parametrize(
    "option",
    ["--trainer.default_root_dir", "--trainer.logger.init_args.save_dir"],
)
def test_each_trainer_folder_that_cannot_be_made_is_one_message_naming_its_option(option: str, capsys) -> None:
    folder = blocked()
    err = refused([*COMPACT, option, str(folder)], capsys)
    assert f"{option} {folder}: it cannot be made: a_file is not a folder" in err


def test_a_checkpoint_folder_that_cannot_be_made_names_the_callback(capsys) -> None:
    folder = blocked()
    extra = Path("checkpoints.yaml")
    extra.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {folder}}}\n"
    )
    err = refused([*COMPACT, "--config", str(extra)], capsys)
    assert f"--trainer.callbacks ModelCheckpoint's dirpath {folder}: it cannot be made" in err
    err = refused([*COMPACT, "--checkpoint.dirpath", str(folder)], capsys)  # the checkpoint every run has
    assert f"--checkpoint.dirpath {folder}: it cannot be made" in err


def test_tune_and_sweep_folders_that_cannot_be_made_are_one_message(tiny_mnist: TinyMNIST, capsys) -> None:
    folder = blocked()
    search = Path("search.yaml")
    search.write_text("params:\n  data.batch_size: {choices: [16, 32]}\n")
    fast = ["--config", str(CONFIGS / "fast.yaml")]
    err = refused(["tune", *fast, "--search", str(search), "--trials", "1", "--study_dir", str(folder)], capsys)
    assert f"--study_dir {folder}: it cannot be made: a_file is not a folder" in err
    err = refused(["sweep", "--sweep_dir", str(folder)], capsys)
    assert f"--sweep_dir {folder}: it cannot be made" in err
    save_dir = ["--trainer.logger.init_args.save_dir", str(folder)]
    err = refused(["sweep", *fast, "--seeds", "1", *save_dir], capsys)
    assert f"--trainer.logger.init_args.save_dir {folder}: it cannot be made" in err
    err = refused(["tune", *fast, "--search", str(search), "--trials", "1", *save_dir], capsys)  # its study folder
    assert f"--trainer.logger.init_args.save_dir {folder}: it cannot be made" in err
    assert refused(["sweep", *fast, "--seeds", "1", "--data.data_dir", f"{folder}/data"], capsys).startswith(
        f"error: --data.data_dir {folder}/data: the MNIST files are fetched into"
    )
    assert not Path("lightning_logs").exists()


def test_classify_explain_dir_that_cannot_be_made_is_one_message(capsys) -> None:
    folder = blocked()
    err = refused(
        ["classify", "digit.png", "--ckpt_path", "m.ckpt", "--explain", "ig", "--explain_dir", str(folder)], capsys
    )
    assert f"--explain_dir {folder}: it cannot be made: a_file is not a folder" in err


@needs_proc
@pytest.mark.parametrize(
    "args",
    [
        ["export", "--ckpt_path", "m.ckpt", "--output", "/proc/model.onnx"],
        ["calibrate", "--ckpt_path", "m.ckpt", "--output", "/proc/model.ckpt"],
        ["calibrate", "--ckpt_path", "m.ckpt", "--json", "/proc/calibration.json"],
    ],
    ids=["export --output", "calibrate --output", "calibrate --json"],
)
def test_an_output_file_in_a_folder_that_cannot_be_written_is_one_message(args: list[str], capsys) -> None:
    err = refused(args, capsys)
    option, path = args[-2:]
    assert f"{option} {path}: its folder /proc: cannot write into it: /proc refuses new entries" in err


def test_unwritable_reason_says_why_and_leaves_nothing_behind(tmp_path: Path) -> None:
    assert unwritable_reason(tmp_path / "new" / "deeper") is None
    assert unwritable_reason(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe folder is gone, and nothing was made
    (tmp_path / "f").write_text("x")
    assert unwritable_reason(tmp_path / "f") == "it is a file, not a folder"
