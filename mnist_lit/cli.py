"""The command line: one LightningCLI, the network chosen in YAML, test after fit by default.

``python -m mnist_lit fit --config configs/keras_report.yaml`` trains, restores the best weights (when the config
asks for it) and evaluates on the test set; ``validate``, ``test`` and ``predict`` take ``--ckpt_path``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mnist_lit.callbacks.outputs import RunConfigSaver
from mnist_lit.data.acquire import MNISTUnavailableError
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.files import IdxFileError
from mnist_lit.data.images import PredictInputError
from mnist_lit.models.base import MNISTClassifier

#: ``ckpt_path`` values that Lightning resolves itself rather than as a file.
SPECIAL_CKPT_PATHS = {"best", "last", "hpc", "registry"}

#: Steps between redraws of the default progress bar. Lightning's default, 1, redraws it every step: measured on 2 CPU
#: cores, 0.21 to 0.26 ms a step against 0.03 to 0.09 ms at 10, 2% of a compact-network step, for redraws no one reads.
PROGRESS_BAR_REFRESH_RATE = 10


class UserInputError(RuntimeError):
    """A problem with what the user gave (a file, an option), reported as one message instead of a traceback."""


class MNISTLitCLI(LightningCLI):
    """LightningCLI with ``--test_after_fit`` and checkpoint checks that fail with a message, not a traceback."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """The parser, without abbreviations: argparse would take --trainer.max_epoch for --trainer.max_epochs."""
        kwargs.setdefault("allow_abbrev", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``--test_after_fit``, so that ``fit`` can end with the notebooks' test evaluation, or not."""
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After `fit`, evaluate the final (restored-best, if so configured) weights on the test set.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check ``--ckpt_path`` before Lightning reads it (and would fail with a traceback)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            options = self.config[subcommand]
            check_checkpoint(subcommand, options.get("ckpt_path"), options.get("model"))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with a progress bar that redraws every ``PROGRESS_BAR_REFRESH_RATE`` steps.

        Only when the config neither switches the bar off nor brings a progress bar callback of its own (which wins,
        so a config can still ask for ``TQDMProgressBar`` with ``refresh_rate: 1``).
        """
        trainer_config = self._get(self.config_init, "trainer", default={})
        callbacks = trainer_config.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        wants_bar = trainer_config.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs.setdefault("callbacks", [*callbacks, TQDMProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE)])
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        """Evaluate on the test set right after training, as the notebooks do, unless switched off."""
        if self.config.fit.get("test_after_fit", True) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule)


def check_checkpoint(subcommand: str, ckpt_path: str | None, model_config: Any) -> None:
    """Fail early, with a message, on a missing, unreadable or other-network checkpoint.

    ``validate``, ``test`` and ``predict`` need one: without it they would report on random weights.
    """
    if not ckpt_path:
        if subcommand != "fit":
            raise UserInputError(
                f"`{subcommand}` needs --ckpt_path: without a checkpoint the network has random weights. Runs keep "
                "theirs in lightning_logs/<name>/version_N/checkpoints/."
            )
        return
    if "://" in str(ckpt_path):  # a remote checkpoint: Lightning reads it through fsspec
        return
    if str(ckpt_path) in SPECIAL_CKPT_PATHS:
        if subcommand != "fit":
            raise UserInputError(
                f"--ckpt_path {ckpt_path} only means something after a `fit` in the same process; give a checkpoint "
                "file (lightning_logs/<name>/version_N/checkpoints/*.ckpt)."
            )
        return
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserInputError(
            f"--ckpt_path {path}: no such file. Runs keep theirs in lightning_logs/<name>/version_N/checkpoints/."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same to the user
        raise UserInputError(f"--ckpt_path {path}: not a readable checkpoint ({type(err).__name__}: {err}).") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserInputError(f"--ckpt_path {path}: not a Lightning checkpoint (it has no state_dict).")
    saved = checkpoint.get("hyper_parameters", {}).get("_class_path")
    configured = getattr(model_config, "class_path", None) if model_config is not None else None
    if saved and configured and _resolve(saved) != _resolve(configured):
        raise UserInputError(
            f"--ckpt_path {path} holds a {saved.rsplit('.', 1)[-1]}, but the config selects "
            f"{configured.rsplit('.', 1)[-1]}. Use the config the checkpoint was trained with (the run folder keeps "
            "it as config.yaml), or set model.class_path to match."
        )


def _resolve(class_path: str) -> Any:
    """The class a dotted path names, so that two spellings of one class compare equal; else the path itself."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return class_path


def _show_package_logs() -> None:
    """Print ``mnist_lit``'s own INFO messages (data acquisition, skipped inputs) as Lightning prints its own."""
    logger = logging.getLogger("mnist_lit")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def build_cli(args: list[str] | None = None, run: bool = True) -> MNISTLitCLI:
    """The CLI as ``python -m mnist_lit`` builds it; with ``run=False``, no subcommand: the Trainer, model and
    datamodule of the given config, built and not run (the benchmark and tests use that)."""
    return MNISTLitCLI(
        MNISTClassifier,
        MNISTDataModule,
        subclass_mode_model=True,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run the CLI; ``args`` replaces ``sys.argv[1:]`` (tests call ``main([...])`` in-process)."""
    _show_package_logs()
    try:
        build_cli(args)
    except (UserInputError, MNISTUnavailableError, IdxFileError, PredictInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
