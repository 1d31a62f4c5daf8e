"""The commands of ``python -m mnist_lit``, its top-level help and its entry point, importable without torch or
Lightning.

``python -m mnist_lit --help`` answers from here in a fraction of a second; building the LightningCLI parser
first means importing torch and Lightning, seconds on a small machine. The commands beyond LightningCLI's
(:data:`COMMANDS`) are run from here too, each importing only what it uses: ``classify`` with an ONNX file never
imports torch. Each command's own ``--help`` (``fit --help``, ``export --help``) comes from its real parser. The
entry point also ends the process without the interpreter's finalization (:func:`exit_without_finalizing`).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
import warnings
from typing import NoReturn

from mnist_lit.errors import UserError

#: LightningCLI's subcommands, each with what it does here.
LIGHTNING_SUBCOMMANDS = {
    "fit": "train a network as a config says, then test it (--test_after_fit false: do not)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test set",
    "predict": "classify your own images (--data.predict_path), or the test set",
}

#: The other commands: name -> ("module:function", what it does); each parses its own arguments.
COMMANDS = {
    "import-keras": ("mnist_lit.interop.commands:import_keras", "a Keras model to a checkpoint"),
    "export": ("mnist_lit.interop.commands:export", "a checkpoint to ONNX or Keras"),
    "serve": ("mnist_lit.serve.command:main", "a web page to draw digits on, and an HTTP API"),
    "classify": ("mnist_lit.classify:main", "your digit images, at once: with an ONNX file, without torch"),
}

HELP_FLAGS = ("-h", "--help")


def top_level_help() -> str:
    """What ``python -m mnist_lit --help`` prints."""
    width = max(map(len, [*LIGHTNING_SUBCOMMANDS, *COMMANDS])) + 2
    lines = [
        "usage: python -m mnist_lit [-c CONFIG] [--print_config[=flags]] {fit,validate,test,predict} ...",
        "       python -m mnist_lit {" + ",".join(COMMANDS) + "} ...",
        "",
        "Train, evaluate and use MNIST networks with PyTorch Lightning (LightningCLI).",
        "",
        "Lightning subcommands (options: `python -m mnist_lit SUBCOMMAND --help`):",
        *(f"  {name:<{width}}{what}" for name, what in LIGHTNING_SUBCOMMANDS.items()),
        "",
        "Other commands, each with its own --help:",
        *(f"  {name:<{width}}{what}" for name, (_, what) in COMMANDS.items()),
        "",
        "options:",
        "  -h, --help            show this help message and exit",
        "  -c CONFIG, --config CONFIG",
        "                        a YAML config, such as configs/keras_report.yaml (repeatable; later ones win)",
        "  --print_config[=flags]",
        "                        print the configuration after all other arguments, and exit",
        "",
        "example: python -m mnist_lit fit --config configs/keras_report.yaml --trainer.max_epochs 2",
    ]
    return "\n".join(lines)


def main() -> None:
    """``python -m mnist_lit`` and ``mnist-lit``: the top-level help from here, the :data:`COMMANDS` without
    importing the CLI (each imports what it needs, so ``classify`` with an ONNX file never imports torch), the
    Lightning subcommands by the CLI; then :func:`exit_without_finalizing`."""
    argv = sys.argv[1:]
    if len(argv) == 1 and argv[0] in HELP_FLAGS:
        print(top_level_help())
        return
    try:
        if argv and argv[0] in COMMANDS:
            run_command(argv)
        else:
            from mnist_lit.cli import main as cli_main

            cli_main()
    except SystemExit as done:
        exit_without_finalizing(done.code)
    exit_without_finalizing(0)


def run_command(argv: list[str]) -> None:
    """Run the command ``argv[0]`` (one of :data:`COMMANDS`) with the rest as its arguments; a :class:`UserError`
    is printed as ``error: ...`` and exits with status 1. Each command is imported only when used, so that ``fit``
    never pays for ONNX, Keras or a web server."""
    configure_logging()
    module, _, function = COMMANDS[argv[0]][0].partition(":")
    try:
        getattr(importlib.import_module(module), function)(argv[1:])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def configure_logging() -> None:
    """Print ``mnist_lit``'s own INFO messages (data acquisition, skipped inputs) as Lightning prints its own, and
    silence exactly the two messages of every run that are neither ours nor about the user's setup: Lightning's
    advertisement, and a deprecation inside Lightning's own pytree code. Every other warning stays."""
    logger = logging.getLogger("mnist_lit")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvertisement) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvertisement())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class _DropAdvertisement(logging.Filter):
    """Drops Lightning's suggestion to install a logging service, printed at every run's start: nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def exit_without_finalizing(code: int | str | None) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, minus the interpreter's finalization.

    Finalizing an interpreter that has imported torch raises its resident memory by about 110 MiB in the last tenth
    of a second (measured with the CUDA build of torch 2.14 on a CPU: ``import torch``, then exit, 522 -> 631 MiB),
    so a run's peak memory would be set by its exit. Everything Python would still do is done first: the other
    threads are joined, the ``atexit`` handlers run (logging's flush among them) and the standard streams are
    flushed; every file ``mnist_lit`` writes is closed by then. Only the command-line entry points call this;
    ``mnist_lit.cli.main`` in a program of your own returns normally.
    """
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
