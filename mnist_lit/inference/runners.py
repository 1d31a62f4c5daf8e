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
    #: The OOD score (higher: less like a digit): ``max_softmax``, ``energy`` or ``mahalanobis``.
    ood_method: str
    #: The score above which an input is "not a digit" (None: none fitted, every input is taken for a digit).
    ood_threshold: float | None

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 10) float32 probabilities for (N, 1, 28, 28) raw pixel values (uint8 or float, 0-255)."""
        ...

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The probabilities, and the (N,) float32 OOD scores, in one pass."""
        ...


def load_runner(path: str | Path) -> Runner:
    """A :class:`Runner` for a checkpoint (``.ckpt``, run in PyTorch) or an exported ``.onnx`` (in ONNX Runtime)."""
    if Path(path).suffix.lower() == ".onnx":
        from mnist_lit.inference.onnx_runner import OnnxRunner  # ONNX Runtime is an optional extra: import it only here

        return OnnxRunner(path)
    from mnist_lit.inference.torch_runner import TorchRunner  # torch and Lightning: only for checkpoints

    return TorchRunner(path)


def predict_with_scores(runner: Runner, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``runner.predict(pixels)``; for a runner with ``probabilities`` only, its max-softmax scores (minus the top
    probability), which need nothing fitted."""
    predict = getattr(runner, "predict", None)
    if predict is not None:
        return predict(pixels)
    probabilities = runner.probabilities(pixels)
    return probabilities, -probabilities.max(axis=1)
