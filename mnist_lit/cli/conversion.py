"""What the ``import-keras`` and ``export`` commands share: their error, the ``--output`` check, and the network
that ``--config`` files select, built as ``fit`` builds it."""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import Any

from mnist_lit.cli.lightning_cli import build_cli
from mnist_lit.cli.writable import check_writable_file
from mnist_lit.errors import UserError
from mnist_lit.models.base import MNISTClassifier

PROG = "python -m mnist_lit"


class ExportError(UserError):
    """An ``export`` or ``import-keras`` that cannot be done as asked: a bad option, or a file that failed its check."""


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an ``--output`` in a folder that does not exist, a folder, or an existing file without ``--overwrite``."""
    if not output.parent.is_dir():
        raise ExportError(f"--output {output}: the folder {output.parent} does not exist; create it first.")
    if output.is_dir():
        raise ExportError(f"--output {output}: is a folder; give a file name.")
    check_writable_file("--output", output)
    if output.exists() and not overwrite:
        raise ExportError(f"--output {output}: the file exists; pass --overwrite to replace it.")


def network_options(cls: type) -> set[str]:
    """The constructor arguments that shape a network class (not its training options)."""
    training = set(inspect.signature(MNISTClassifier).parameters)
    return {name for name in inspect.signature(cls).parameters if name not in training and name != "kwargs"}


def configured_network(configs: list[str]) -> tuple[Any, Any]:
    """The network and data module of ``--config`` files, as ``python -m mnist_lit fit --config ...`` builds them."""
    for config in configs:
        if not Path(config).is_file():
            raise ExportError(f"--config {config}: no such file.")
    args = [item for config in configs for item in ("--config", config)]
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # the Trainer's notes (GPU available, tips) are not about this command
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            cli = build_cli([*args, "--seed_everything", "false", "--trainer.logger", "false"], run=False)
    finally:
        lightning_log.setLevel(level)
    return cli.model, cli.datamodule
