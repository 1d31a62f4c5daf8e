"""Writing files so that no reader ever sees half of one, and nothing is replaced by accident."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once, at import: changing the umask later would race with other threads


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any, indent: int = 2) -> None:
    """Write ``value`` as indented JSON, with a final newline, atomically (:func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, (json.dumps(value, indent=indent) + "\n").encode())


def atomic_torch_save(path: Path, value: Any) -> None:
    """``torch.save(value)`` to ``path`` atomically: serialized in memory, then :func:`atomic_write_bytes`."""
    import torch  # imported when used: the commands without torch (classify with ONNX) import this module

    buffer = io.BytesIO()
    torch.save(value, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def free_name(path: Path, keep_suffix: bool = False) -> Path:
    """``path`` if nothing is there, else the first of ``path.1``, ``path.2``, ... that is free (with
    ``keep_suffix``: ``name-1.ckpt``, ``name-2.ckpt``, ..., so that the file keeps its type)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        name = f"{path.stem}-{n}{path.suffix}" if keep_suffix else f"{path.name}.{n}"
        candidate = path.with_name(name)
    return candidate
