"""MNIST acquisition, verification and the LightningDataModule.

The data module and the acquisition import torch and Lightning; they are loaded when first used, so that the
plain-array modules (:mod:`.idx`, :mod:`.images`) stay cheap to import for commands that need no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mnist_lit.data.idx import MNIST_FILES, IdxFileError, IdxFileSpec, verify_idx_bytes

if TYPE_CHECKING:
    from mnist_lit.data.acquire import MNISTUnavailableError, ensure_mnist_files
    from mnist_lit.data.datamodule import MNISTDataModule

#: The names loaded on first use, and their modules.
_LAZY = {
    "MNISTDataModule": "mnist_lit.data.datamodule",
    "MNISTUnavailableError": "mnist_lit.data.acquire",
    "ensure_mnist_files": "mnist_lit.data.acquire",
}

__all__ = [
    "MNIST_FILES",
    "IdxFileError",
    "IdxFileSpec",
    "MNISTDataModule",
    "MNISTUnavailableError",
    "ensure_mnist_files",
    "verify_idx_bytes",
]


def __getattr__(name: str) -> Any:
    """Import the data module or the acquisition on first use of one of their names (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
