"""The folders a command is told to write into, refused before anything runs when they cannot be written: one
message naming the option, the folder and why (see :func:`mnist_lit.utils.folders.unwritable_reason`). Imports
neither torch nor Lightning, so ``classify`` can use it."""

from __future__ import annotations

from pathlib import Path

from mnist_lit.errors import UserError
from mnist_lit.utils.folders import unwritable_reason


def check_writable(option: str, folder: str | Path) -> None:
    """Raise a :class:`UserError` naming ``option`` and ``folder`` when the folder cannot be written or made."""
    problem = unwritable_reason(folder)
    if problem:
        raise UserError(f"{option} {folder}: {problem}. Give a folder you can write to.")


def check_writable_file(option: str, path: str | Path) -> None:
    """:func:`check_writable` for the folder a file named by ``option`` will be written in."""
    problem = unwritable_reason(Path(path).parent)
    if problem:
        raise UserError(f"{option} {path}: its folder {Path(path).parent}: {problem}. Give a path you can write to.")
