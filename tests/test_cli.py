"""The command line, called in-process through mnist_lit's own entry point (and once as a real process)."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.cli import LightningCLI

from mnist_lit.callbacks import EpochLineProgress
from mnist_lit.callbacks.progress import PROGRESS_BAR_REFRESH_RATE
from mnist_lit.cli import main
from mnist_lit.cli.lightning_cli import build_cli
from mnist_lit.cli.registry import COMMANDS, LIGHTNING_SUBCOMMANDS, configure_logging
from mnist_lit.models import CompactCNN
from tests.helpers import CONFIGS, REPO_ROOT, TinyMNIST, exit_code, runs

TINY_RUN = ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--data.eval_batch_size", "16"]


def _run(args: list[str]) -> None:
    main(args)


def caught_messages(caught: list[warnings.WarningMessage]) -> list[Warning | str]:
    return [w.message for w in caught]


def test_help_lists_the_subcommands(capsys) -> None:
    main(["--help"])  # answered by the dispatcher, without building the LightningCLI
    out = capsys.readouterr().out
    for sub in ("fit", "validate", "test", "predict", "import-keras", "export", "serve"):
        assert sub in out


def test_print_config_shows_the_chosen_network_and_overrides(capsys) -> None:
    args = ["fit", "--config", str(CONFIGS / "keras_report.yaml"), "--trainer.max_epochs", "2"]
    assert exit_code([*args, "--data.batch_size", "256", "--print_config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "mnist_lit.models.KerasReportCNN"
    assert config["model"]["init_args"]["eps"] == 1e-7
    assert (config["trainer"]["max_epochs"], config["data"]["batch_size"]) == (2, 256)
    assert config["test_after_fit"] is True


def test_a_recipe_holds_only_its_differences_and_print_config_shows_the_whole_run(capsys) -> None:
    recipe = yaml.safe_load((CONFIGS / "compact.yaml").read_text())
    listed = {c["class_path"].rsplit(".", 1)[-1] for c in recipe["trainer"]["callbacks"]}
    assert listed == {"WeightHistograms"}  # the run callbacks, the seed and the logger come from the base config
    assert "seed_everything" not in recipe and "class_path" not in recipe["trainer"]["logger"]
    assert exit_code(["fit", "--config", str(CONFIGS / "compact.yaml"), "--print_config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert (config["seed_everything"], config["trainer"]["deterministic"]) == (0, "warn")
    logger = config["trainer"]["logger"]
    assert logger["class_path"].endswith("TensorBoardLogger")
    assert (logger["init_args"]["save_dir"], logger["init_args"]["name"]) == ("lightning_logs", "compact")
    assert config["checkpoint"]["filename"] == "last-{epoch}" and config["checkpoint"]["save_last"] is True
    assert {"figures", "metrics_report", "predictions"} <= config.keys()


def test_an_old_config_listing_the_run_callbacks_still_runs_and_says_what_to_delete(tmp_path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mnist_lit.callbacks import GeometricErrorCallback, MetricsReport, PerClassMetrics

    old = yaml.safe_load((CONFIGS / "compact.yaml").read_text())
    old["trainer"]["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"filename": "old-{epoch}"}},
        {"class_path": "mnist_lit.callbacks.GeometricErrorCallback"},  # the name PerClassMetrics had
        {"class_path": "mnist_lit.callbacks.MetricsReport"},
    ]
    Path(tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = build_cli(["--config", str(tmp_path / "old.yaml"), "--trainer.logger", "false"], run=False)
    told = [m for m in map(str, caught_messages(caught)) if "which every run now has: delete it from the list" in m]
    assert sorted(m.split()[2].rstrip(",") for m in told) == ["MetricsReport", "ModelCheckpoint", "PerClassMetrics"]
    kinds = [type(c) for c in cli.trainer.callbacks]  # type: ignore[attr-defined]
    assert GeometricErrorCallback is PerClassMetrics
    assert [kinds.count(k) for k in (ModelCheckpoint, PerClassMetrics, MetricsReport)] == [1, 1, 1]
    checkpoint = cli.trainer.checkpoint_callback
    assert isinstance(checkpoint, ModelCheckpoint) and checkpoint.filename == "old-{epoch}" and checkpoint.save_last


def test_config_is_repeatable_and_later_files_win(tmp_path, capsys) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("data:\n  batch_size: 32\nmodel:\n  init_args:\n    dense_units: 64\n")
    args = ["fit", "--config", str(CONFIGS / "compact.yaml"), "--config", str(extra), "--print_config"]
    assert exit_code(args) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["batch_size"] == 32
    assert config["model"]["init_args"]["dense_units"] == 64
    assert config["trainer"]["max_epochs"] == 5


def test_a_mistyped_option_gets_the_parsers_message(capsys) -> None:
    assert exit_code(["fit", "--config", str(CONFIGS / "compact.yaml"), "--trainer.max_epoch", "2"]) == 2
    err = capsys.readouterr().err
    assert "max_epoch" in err and "Traceback" not in err


def test_a_mistyped_config_key_gets_the_parsers_message(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  bach_size: 32\n")
    assert exit_code(["fit", "--config", str(CONFIGS / "compact.yaml"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bach_size" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("options", "refresh_rate"),
    [
        ([], PROGRESS_BAR_REFRESH_RATE),
        (["--trainer.enable_progress_bar", "false"], None),
        (["--trainer.callbacks+=TQDMProgressBar", "--trainer.callbacks.refresh_rate", "1"], 1),
    ],
)
def test_in_a_terminal_the_progress_bar_redraws_every_few_steps_unless_configured(
    options: list[str], refresh_rate: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    cli = build_cli(["--config", str(CONFIGS / "compact.yaml"), *options], run=False)
    bar = cli.trainer.progress_bar_callback
    assert (bar.refresh_rate if bar is not None else None) == refresh_rate


@pytest.mark.parametrize(
    ("options", "data_seed"),
    [([], 0), (["--seed_everything", "3"], 3), (["--seed_everything", "3", "--data.seed", "5"], 5)],
)
def test_the_data_seed_follows_seed_everything_unless_set(options: list[str], data_seed: int) -> None:
    cli = build_cli(["--config", str(CONFIGS / "compact.yaml"), "--trainer.logger", "false", *options], run=False)
    assert cli.datamodule.hparams.seed == data_seed
    assert cli.config.data.seed == data_seed  # what the run folder's config.yaml records


def test_into_a_file_the_progress_is_one_line_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    cli = build_cli(["--config", str(CONFIGS / "compact.yaml")], run=False)
    assert isinstance(cli.trainer.progress_bar_callback, EpochLineProgress)


@pytest.mark.parametrize("mode", [["--trainer.fast_dev_run", "true"], ["--trainer.logger", "false", *TINY_RUN]])
def test_runs_without_a_run_folder_write_nothing_into_the_current_folder(tiny_mnist: TinyMNIST, mode) -> None:
    Path("config.yaml").write_text("mine\n")  # a user's own file in the folder they run from
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(["fit", "--config", str(CONFIGS / "keras_report.yaml"), *mode])
    assert any("No TensorBoard or CSV logger, so no run folder" in str(m) for m in caught_messages(caught))
    assert Path("config.yaml").read_text() == "mine\n"
    assert not {"metrics.json", "figures", "lightning_logs"} & {p.name for p in Path().iterdir()}


def test_fit_writes_a_complete_run_and_test_reproduces_it(tiny_mnist: TinyMNIST) -> None:
    config = str(CONFIGS / "compact.yaml")
    _run(["fit", "--config", config, *TINY_RUN])
    (run,) = runs("compact")
    report = json.loads((run / "metrics.json").read_text())
    cm = torch.tensor(report["confusion_matrix"])
    assert cm.sum() == tiny_mnist.n_test == report["num_samples"]  # every test image exactly once
    assert report["test_acc"] == pytest.approx(cm.trace().item() / cm.sum().item())
    assert report["geometric"]["trace_accuracy"] == pytest.approx(report["test_acc"])
    assert report["epochs_run"] == 2 and len(report["seconds_per_epoch"]) == 2
    assert report["config"]["model"]["class_path"] == "mnist_lit.models.CompactCNN"
    checkpoint = Path(report["best_checkpoint"])
    assert isinstance(CompactCNN.load_from_checkpoint(checkpoint, map_location="cpu"), CompactCNN)

    first_report = (run / "metrics.json").read_bytes()
    _run(["test", "--config", config, "--ckpt_path", str(checkpoint), "--data.eval_batch_size", "16"])
    first, second = runs("compact")
    assert first == run and (run / "metrics.json").read_bytes() == first_report  # the test got its own folder
    again = json.loads((second / "metrics.json").read_text())
    assert again["confusion_matrix"] == report["confusion_matrix"]
    assert again["test_loss"] == pytest.approx(report["test_loss"], rel=1e-6)


def test_same_seed_same_numbers_and_reruns_keep_earlierruns(tiny_mnist: TinyMNIST) -> None:
    args = ["fit", "--config", str(CONFIGS / "keras_report.yaml"), *TINY_RUN, "--data.batch_size", "32"]
    _run(args)
    _run(args)  # the same log folder again: a new version, no clash with the saved config
    reports = [json.loads((run / "metrics.json").read_text()) for run in runs("keras_report")]
    assert len(reports) == 2
    assert reports[0]["test_loss"] == reports[1]["test_loss"]
    assert reports[0]["confusion_matrix"] == reports[1]["confusion_matrix"]


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_without_a_checkpoint_is_refused(subcommand: str, capsys) -> None:
    assert exit_code([subcommand, "--config", str(CONFIGS / "compact.yaml")]) == 1
    assert f"`{subcommand}` needs --ckpt_path" in capsys.readouterr().err


def test_bad_data_options_get_the_parsers_message(capsys) -> None:
    for option in (["--data.batch_size", "0"], ["--data.val_fraction", "1.5"]):
        assert exit_code(["fit", "--config", str(CONFIGS / "compact.yaml"), *option, "--print_config"]) == 2
        err = capsys.readouterr().err
        assert option[0].lstrip("-") in err and "Traceback" not in err


def test_normalization_travels_with_the_checkpoint(tiny_mnist: TinyMNIST) -> None:
    _run(["fit", "--config", str(CONFIGS / "compact.yaml"), *TINY_RUN, "--data.normalization", "standardize"])
    (run,) = runs("compact")
    report = json.loads((run / "metrics.json").read_text())
    # Evaluated with a config that says `unit`: the checkpoint's `standardize` must win, giving the same loss.
    _run(["test", "--config", str(CONFIGS / "compact.yaml"), "--ckpt_path", report["best_checkpoint"],
          "--data.normalization", "unit", "--data.eval_batch_size", "16"])  # fmt: skip
    again = json.loads((runs("compact")[1] / "metrics.json").read_text())
    assert again["test_loss"] == pytest.approx(report["test_loss"], rel=1e-6)


def test_a_missing_or_corrupt_checkpoint_is_reported(tiny_mnist: TinyMNIST, tmp_path, capsys) -> None:
    config = str(CONFIGS / "compact.yaml")
    assert exit_code(["test", "--config", config, "--ckpt_path", str(tmp_path / "nope.ckpt")]) == 1
    assert "nope.ckpt: no such file" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00" * 100)
    assert exit_code(["test", "--config", config, "--ckpt_path", str(corrupt)]) == 1
    err = capsys.readouterr().err
    assert "corrupt.ckpt: not a readable checkpoint" in err and "Traceback" not in err


def test_a_checkpoint_of_another_network_is_reported(tiny_mnist: TinyMNIST, capsys) -> None:
    _run(["fit", "--config", str(CONFIGS / "compact.yaml"), *TINY_RUN, "--trainer.max_epochs", "1"])
    checkpoint = runs("compact")[0] / "checkpoints" / "last.ckpt"
    assert exit_code(["test", "--config", str(CONFIGS / "keras_report.yaml"), "--ckpt_path", str(checkpoint)]) == 1
    err = capsys.readouterr().err
    assert "holds a CompactCNN, but the config selects KerasReportCNN" in err


def test_missing_data_without_downloads_explains_how_to_place_files(tmp_path, capsys) -> None:
    args = ["fit", "--config", str(CONFIGS / "compact.yaml"), "--data.download", "false"]
    assert exit_code([*args, "--data.data_dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "Could not obtain a verified copy of MNIST" in err and "To place the files by hand" in err


def test_console_script_and_module_start_the_same_cli() -> None:
    bindir = Path(sys.executable).parent
    for cmd in ([sys.executable, "-m", "mnist_lit", "--help"], [str(bindir / "mnist-lit"), "--help"]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert "{fit,validate,test,predict}" in result.stdout
    for cmd in ([sys.executable, "-m", "mnist_lit", "fit", "--help"], [str(bindir / "mnist-lit"), "fit", "--help"]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert "--trainer.max_epochs" in result.stdout


def test_top_level_help_names_every_command_without_importing_torch() -> None:
    script = (
        "import runpy, sys\n"
        "sys.argv = ['mnist_lit', '--help']\n"
        "runpy.run_module('mnist_lit', run_name='__main__')\n"
        "print('imported:', sorted({'torch', 'lightning'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "imported: []" in out
    assert list(LIGHTNING_SUBCOMMANDS) == list(LightningCLI.subcommands())
    for name in [*LIGHTNING_SUBCOMMANDS, *COMMANDS]:
        assert f"\n  {name} " in out


def test_a_run_into_a_log_file_writes_one_line_per_epoch_and_no_library_noise(tiny_mnist: TinyMNIST) -> None:
    script = (
        "from mnist_lit.data import idx\n"
        "from tests.helpers import tiny_specs\n"
        f"idx.MNIST_FILES = tiny_specs({str(tiny_mnist.data_dir)!r})\n"
        "from mnist_lit.cli.dispatch import entry_point\n"  # `python -m mnist_lit`, which exits early
        "entry_point()\n"
    )
    log = Path("run.log")
    with log.open("w") as out:  # standard output is a file, not a terminal
        subprocess.run(
            [sys.executable, "-c", script, "fit", "--config", str(CONFIGS / "compact.yaml"),
             "--trainer.max_epochs", "3", "--data.eval_batch_size", "16", "--trainer.log_every_n_steps", "1"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=True,
        )  # fmt: skip
    text = log.read_text()
    epoch_lines = [line for line in text.splitlines() if line.startswith("Epoch ")]
    assert [line.split(" (")[0] for line in epoch_lines] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert all("val/acc" in line and "train/loss" in line for line in epoch_lines)
    assert "Validation" not in text and "\r" not in text  # no redrawn bars
    assert "Tip:" not in text and "LeafSpec" not in text
    assert "Data: 200 train / 50 validation" in text
    assert "test/acc" in text and text.rstrip().endswith("┘")  # all of it flushed, the test table last
    (run,) = runs("compact")
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 3
    events = sorted(run.glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)  # the TensorBoard files were closed, not cut off


def test_the_log_handler_writes_to_the_stderr_of_the_moment_not_to_the_one_it_was_made_with(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # As under pytest's capture or a notebook: the handler is made while one stderr is in place, which is then closed.
    logger = logging.getLogger("mnist_lit")
    monkeypatch.setattr(logger, "handlers", [])  # as before the first configure_logging() of a process
    request.addfinalizer(functools.partial(logger.setLevel, logger.level))  # setLevel: no stale cached levels
    logger.setLevel(logging.NOTSET)
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging()
    logging.getLogger("mnist_lit.data").info("made while the first stream was stderr")
    assert first.getvalue() == "made while the first stream was stderr\n"
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("mnist_lit.data").info("written after it was closed")
    assert second.getvalue() == "written after it was closed\n"  # no '--- Logging error ---' either
