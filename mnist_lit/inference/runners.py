"""What serves predictions from raw pixels, a checkpoint in PyTorch or an export in ONNX Runtime, chosen by the file.

Importing this module imports neither torch nor ONNX Runtime: :func:`load_runner` imports the one the file needs, so
a command given an ``.onnx`` file (``classify``, ``serve``) never pays for torch and Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Runner(Protocol):
    """What serves predictions: a name for the network, and probabilities for a batch of raw-pixel images."""

    network_name: str
    source: Path
    #: The top probability under which an answer is "not sure" (None: no threshold, every answer is given).
    unsure_threshold: float | None

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 10) float32 probabilities for (N, 1, 28, 28) raw pixel values (uint8 or float, 0-255)."""
        ...


def load_runner(path: str | Path) -> Runner:
    """A :class:`Runner` for a checkpoint (``.ckpt``, run in PyTorch), a model folder (``export --output DIR/``, in
    PyTorch without Lightning) or an exported ``.onnx`` (in ONNX Runtime)."""
    if Path(path).is_dir():
        from mnist_lit.inference.pretrained import load_folder  # torch and safetensors, no Lightning

        return load_folder(Path(path))
    if Path(path).suffix.lower() == ".onnx":
        from mnist_lit.inference.onnx_runner import OnnxRunner  # ONNX Runtime is an optional extra: import it only here

        return OnnxRunner(path)
    from mnist_lit.inference.torch_runner import TorchRunner  # torch and Lightning: only for checkpoints

    return TorchRunner(path)
