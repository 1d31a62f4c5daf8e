"""What ``sweep`` and ``tune`` share: the ``fit`` configuration parser without running anything, and ``fit`` run
in-process.

Runs are in-process (one :func:`~mnist_lit.cli.lightning_cli.build_cli` per run) rather than one subprocess each:
the package and torch are imported once instead of once per seed or trial (about 10 s here), ``tune`` can hand the
live Optuna trial to a pruning callback, and the results are read from the Trainer rather than parsed from output.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.callbacks import Callback

from mnist_lit.cli.lightning_cli import MNISTLitCLI, build_cli
from mnist_lit.errors import UserError


class _ParserReady(Exception):
    def __init__(self, parser: ArgumentParser) -> None:
        self.parser = parser


class _ParserOnly(MNISTLitCLI):
    """The CLI up to its parser: stops before parsing, so that nothing is instantiated."""

    def parse_arguments(self, parser: Any, args: Any) -> None:
        raise _ParserReady(parser)


def fit_parser() -> ArgumentParser:
    """The parser of ``fit``'s configuration (trainer, model, data and our options), raising instead of exiting."""
    try:
        _ParserOnly(run=False, args=[])
    except _ParserReady as ready:
        ready.parser.exit_on_error = False
        return ready.parser
    raise AssertionError("the CLI parsed without calling parse_arguments")


class FitConfig:
    """The configuration ``fit`` would run for ``--config`` files and options, resolved and checked now."""

    def __init__(self, configs: Sequence[str], options: Sequence[str]) -> None:
        self.args = [a for c in configs for a in ("--config", c)] + list(options)
        self.parser = fit_parser()
        self.config = self.parse(self.args)

    def parse(self, args: Sequence[str]) -> Namespace:
        try:
            return self.parser.parse_args(list(args))
        except Exception as err:  # jsonargparse's ArgumentError, or a config file it cannot read
            raise UserError(f"the fit options {' '.join(args)} are refused: {err}") from err

    def has(self, key: str) -> bool:
        """Whether ``key`` (dotted, as ``model.init_args.lr``) is a key of the configuration."""
        try:
            return key in self.config and key != "config"
        except (KeyError, TypeError):
            return False

    def refusal(self, key: str, value: Any) -> str | None:
        """The parser's complaint about setting ``key`` to ``value``, or None when it accepts it."""
        try:
            self.parser.parse_args([*self.args, f"--{key}={json.dumps(value)}"])
        except Exception as err:
            return str(err).strip()
        return None

    def logger_args(self) -> Namespace:
        """The init_args of the configured logger, which must have a save_dir, name and version (TensorBoard, CSV)."""
        logger = self.config.trainer.get("logger")
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if init_args is None or not {"save_dir", "name", "version"} <= set(init_args.keys()):
            raise UserError(
                "the config needs a logger with save_dir, name and version (TensorBoardLogger or CSVLogger, as the "
                "shipped configs have): each run is put in its own folder through them."
            )
        return init_args

    def dump(self, extra: Sequence[str]) -> str:
        """The full YAML configuration of these options plus ``extra``, loadable with ``fit --config``."""
        config = self.parse([*self.args, *extra])
        config.pop("config", None)
        return self.parser.dump(config, skip_none=False)


def run_fit(args: Sequence[str], callbacks: list[Callback] | None = None) -> MNISTLitCLI:
    """``python -m mnist_lit fit ARGS`` in this process; the finished CLI (its trainer holds the results).

    Ctrl-C ends it with Lightning's ``SystemExit(1)``, which the callers let through: a half-trained run is never
    recorded as a result.
    """
    with warnings.catch_warnings():  # LightningCLI's warning that sys.argv (the sweep's own) is not what it parses
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return build_cli(["fit", *args], callbacks=callbacks)
