"""The commands of ``python -m mnist_lit`` and its top-level help, importable without torch or Lightning.

``python -m mnist_lit --help`` answers from here in a fraction of a second; building the LightningCLI parser
first means importing torch and Lightning, seconds on a small machine. Each command's own ``--help`` (``fit
--help``, ``export --help``) comes from its real parser. The entry point also ends the process without the
interpreter's finalization (:func:`exit_without_finalizing`).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

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
    """``python -m mnist_lit`` and ``mnist-lit``: the top-level help from here, anything else by the CLI, then
    :func:`exit_without_finalizing`."""
    if len(sys.argv) == 2 and sys.argv[1] in HELP_FLAGS:
        print(top_level_help())
        return
    from mnist_lit.cli import main as cli_main

    try:
        cli_main()
    except SystemExit as done:
        exit_without_finalizing(done.code)
    exit_without_finalizing(0)


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
