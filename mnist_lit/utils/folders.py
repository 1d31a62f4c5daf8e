"""Whether a folder that a command is told to write into can be written: asked before anything runs, so that the
answer is one message naming the option (:mod:`mnist_lit.cli.writable`) rather than a traceback from deep inside a
run."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def unwritable_reason(folder: str | Path) -> str | None:
    """Why ``folder`` cannot be written into (or made, when it does not exist yet), or None when it can.

    The test is the real thing, not :func:`os.access` (which says yes to root everywhere, and knows nothing of
    file systems like ``/proc`` that refuse new entries): a uniquely named folder is made and removed in
    ``folder``, or in its nearest existing parent when it does not exist. Nothing is left behind, and no name
    another process may be making is touched.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and not probe.is_symlink() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return "it is a file, not a folder" if probe == folder else f"it cannot be made: {probe} is not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".mnist_lit_write_check_"))
    except OSError as err:
        why = {
            errno.EACCES: f"{probe} is not writable (permission denied)",
            errno.EPERM: f"{probe} is not writable (operation not permitted)",
            errno.EROFS: f"{probe} is on a read-only file system",
            errno.ENOSPC: f"the disk holding {probe} is full",
            errno.EDQUOT: f"the disk quota of {probe} is used up",
        }.get(err.errno or 0, f"{probe} refuses new entries ({err.strerror})")
        return f"cannot write into it: {why}" if probe == folder else f"it does not exist and cannot be made: {why}"
    return None
