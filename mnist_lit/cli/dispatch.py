"""The commands of ``python -m mnist_lit``, its top-level help and its entry point, importable without torch or
Lightning.

``python -m mnist_lit --help`` answers from here in a fraction of a second; building the LightningCLI parser
first means importing torch and Lightning, seconds on a small machine. The commands beyond LightningCLI's
(:data:`COMMANDS`) are run from here too, each importing only what it uses: ``classify`` with an ONNX file never
imports torch. Each command's own ``--help`` (``fit --help``, ``export --help``) comes from its real parser. The
entry point also ends the process without the interpreter's finalization (:func:`exit_without_finalizing`).

:func:`main` is the one dispatcher of the package, and the one place where a user error becomes a message.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
from typing import NoReturn

from mnist_lit.cli.registry import COMMANDS, HELP_FLAGS, LIGHTNING_SUBCOMMANDS, configure_logging
from mnist_lit.errors import UserError
from mnist_lit.utils.allocator import retain_heap


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


def main(args: list[str] | None = None) -> None:
    """Run ``python -m mnist_lit ARGS`` in this process (``args`` replaces ``sys.argv[1:]``; tests call
    ``main([...])``): the top-level help from here, the :data:`COMMANDS` without importing the LightningCLI (each
    imports what it needs, so ``classify`` with an ONNX file never imports torch), the Lightning subcommands by the
    CLI. This is the one place a :class:`~mnist_lit.errors.UserError` becomes ``error: ...`` and exit status 1."""
    argv = sys.argv[1:] if args is None else list(args)
    if len(argv) == 1 and argv[0] in HELP_FLAGS:
        print(top_level_help())
        return
    configure_logging()
    try:
        if argv and argv[0] in COMMANDS:
            module, _, function = COMMANDS[argv[0]][0].partition(":")
            getattr(importlib.import_module(module), function)(argv[1:])
        else:
            from mnist_lit.cli.lightning_cli import run_lightning

            run_lightning(None if args is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def entry_point() -> None:
    """``python -m mnist_lit`` and ``mnist-lit``: :func:`main`, then, once torch is imported,
    :func:`exit_without_finalizing` (without torch there is nothing to skip: ``--help`` returns as usual).

    The process keeps the memory its steps free (:func:`~mnist_lit.utils.allocator.retain_heap`), which only a
    process of its own may decide: a test calling :func:`main` leaves its host's allocator alone."""
    retain_heap()
    try:
        main()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if "torch" in sys.modules:
        exit_without_finalizing(code)
    if code:
        raise SystemExit(code)


def exit_without_finalizing(code: int | str | None) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, minus the interpreter's finalization.

    Finalizing an interpreter that has imported torch raises its resident memory in its last moments (by how
    much: the benchmark page, "Fixed costs of a command"), so a run's peak memory would be set by its exit.
    Everything Python would still do is done first: the other threads are joined, the ``atexit`` handlers run
    (logging's flush among them) and the standard streams are flushed; every file ``mnist_lit`` writes is closed by
    then. Only the command-line entry points call this;
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
