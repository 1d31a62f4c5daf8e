"""What a run needs from the machine, checked once its options are parsed and before anything is built: the
accelerator it asks for, and every folder it will write into.

Lightning finds either out deep inside the run, as a traceback (``MisconfigurationException: No supported gpu
backend found!``, ``os.mkdir``'s ``FileNotFoundError``); here each is one message naming the option, the folder or
device, and what to do. ``fit``, ``validate``, ``test`` and ``predict`` run it, and ``sweep`` and ``tune`` before
their first run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace

from mnist_lit.cli.writable import check_writable
from mnist_lit.data import idx
from mnist_lit.errors import UserError
from mnist_lit.utils.folders import unwritable_reason


def check_run_environment(options: Namespace, subcommand: str = "fit", logs_elsewhere: bool = False) -> None:
    """Raise a :class:`UserError` for an accelerator this machine lacks or a folder the run cannot write.

    ``options`` is one subcommand's configuration (``trainer``, ``data``, ...), as ``fit``'s parser makes it. With
    ``logs_elsewhere`` the loggers' ``save_dir`` is not checked: ``sweep`` and ``tune`` put each run in a folder of
    their own, which they check themselves.
    """
    trainer = options.get("trainer") or Namespace()
    check_accelerator(trainer.get("accelerator"))
    check_data_dir(options.get("data"), subcommand)
    for option, folder in folders_written(trainer, options.get("checkpoint")):
        if not (logs_elsewhere and option.endswith("save_dir")):
            check_writable(option, folder)


def check_accelerator(accelerator: Any) -> None:
    """``gpu``, ``cuda`` or ``mps`` where torch sees no such device: say so, what torch sees, and what to drop."""
    if not isinstance(accelerator, str) or accelerator.lower() not in ("gpu", "cuda", "mps"):
        return
    wanted = accelerator.lower()
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if (wanted == "cuda" and cuda) or (wanted == "mps" and mps) or (wanted == "gpu" and (cuda or mps)):
        return
    device = {"cuda": "CUDA GPU", "mps": "Apple MPS device"}.get(wanted, "GPU")
    raise UserError(
        f"--trainer.accelerator {accelerator}: there is no {device} here: {what_torch_sees()}. Drop "
        f"--trainer.accelerator {accelerator} (or set trainer.accelerator: auto in the config) to run on the CPU."
    )


def what_torch_sees() -> str:
    """torch's build and the devices it finds, e.g. ``torch 2.11.0+cpu is built without CUDA; no Apple MPS``."""
    if torch.version.cuda is None:
        seen = f"torch {torch.__version__} is built without CUDA"
    else:
        seen = f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, finds no CUDA device"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            seen += f" (CUDA_VISIBLE_DEVICES={visible!r})"
    mps = "an Apple MPS device" if torch.backends.mps.is_available() else "no Apple MPS device"
    return f"{seen}; {mps}"


def check_data_dir(data: Any, subcommand: str) -> None:
    """``data.data_dir``, when the MNIST files are not all there yet (a folder holding them may be read-only)."""
    data_dir = data.get("init_args", data).get("data_dir") if isinstance(data, Namespace) else None
    if data_dir is None or (subcommand == "predict" and data.get("predict_path")):
        return
    check_mnist_folder("--data.data_dir", data_dir)


def check_mnist_folder(option: str, data_dir: str | Path) -> None:
    """A data folder the MNIST files must be fetched into (not all four are there) that cannot be written."""
    raw = Path(data_dir) / "MNIST" / "raw"
    if all((raw / spec.filename).is_file() for spec in idx.MNIST_FILES):
        return
    problem = unwritable_reason(raw)
    if problem:
        raise UserError(
            f"{option} {data_dir}: the MNIST files are fetched into {raw}, but {problem}. Give a folder you can "
            "write to, or one whose MNIST/raw/ holds the four files."
        )


def folders_written(trainer: Namespace, checkpoint: Any = None) -> Iterator[tuple[str, str]]:
    """Each (option, folder) the Trainer will write into: ``default_root_dir``, each logger's ``save_dir``, the run
    checkpoint's ``dirpath`` (``checkpoint``: its options) and each listed callback's (a ModelCheckpoint's)."""
    if trainer.get("default_root_dir"):
        yield "--trainer.default_root_dir", str(trainer.default_root_dir)
    loggers = trainer.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    for logger in loggers:
        save_dir = _init_arg(logger, "save_dir")
        if save_dir and "://" not in save_dir and not save_dir.startswith("file:"):
            option = "--trainer.logger.init_args.save_dir" if len(loggers) == 1 else f"{_name(logger)}'s save_dir"
            yield option, save_dir
    if isinstance(checkpoint, Namespace) and checkpoint.get("dirpath"):
        yield "--checkpoint.dirpath", str(checkpoint.dirpath)
    callbacks = trainer.get("callbacks")
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        dirpath = _init_arg(callback, "dirpath")
        if dirpath and "://" not in dirpath:
            yield f"--trainer.callbacks {_name(callback)}'s dirpath", dirpath


def _init_arg(component: Any, key: str) -> str | None:
    init_args = component.get("init_args") if isinstance(component, Namespace) else None
    value = init_args.get(key) if isinstance(init_args, Namespace) else None
    return None if value is None else str(value)


def _name(component: Any) -> str:
    return str(component.get("class_path", "?")).rsplit(".", 1)[-1]
