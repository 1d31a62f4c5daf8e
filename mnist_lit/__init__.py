"""mnist_lit: two Keras MNIST notebooks, reimplemented faithfully with PyTorch Lightning.

``mnist_lit.load_pretrained(path)`` loads a model folder, a checkpoint or an ONNX file for notebooks and scripts (see
:mod:`mnist_lit.inference.pretrained`); it is imported on first use, so ``import mnist_lit`` stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnist_lit.inference.pretrained import load_pretrained

__version__ = "0.1.0"

__all__ = ["__version__", "load_pretrained"]


def __getattr__(name: str) -> Any:
    """``load_pretrained`` on first use (PEP 562)."""
    if name == "load_pretrained":
        from mnist_lit.inference.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
