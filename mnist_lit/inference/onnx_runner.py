"""Running an exported model in ONNX Runtime, without torch: the export's contract and :class:`OnnxRunner`.

Nothing here imports torch or Lightning, so a command that only runs an ``.onnx`` file (``classify``) starts in a
fraction of a second; exporting is in :mod:`mnist_lit.interop.onnx`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_lit.data.idx import IMAGE_SIDE, NUM_CLASSES
from mnist_lit.errors import UserError

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
SCORE_NAME = "ood_score"
INPUT_CONTRACT = (
    f"float32 (N, 1, {IMAGE_SIDE}, {IMAGE_SIDE}), N dynamic: raw pixel values 0-255, MNIST polarity (a light digit "
    "on a dark background)"
)
OUTPUT_CONTRACT = f"float32 (N, {NUM_CLASSES}): the probabilities of the digits 0-9 (softmax)"
SCORE_CONTRACT = (
    "float32 (N,): how unlike a digit each image is (higher: less; metadata ood_method); 'not a digit' above the "
    "metadata's ood_threshold"
)


class OnnxModelError(UserError):
    """An ONNX file that is missing, unreadable, or not an mnist_lit export; or ONNX Runtime is not installed."""


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options: no spinning thread pools (spinning threads slow PyTorch in the same process,
    microsoft/onnxruntime#13808), and ``threads`` intra-op threads (ONNX Runtime's choice, one per core, if None)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: the warnings are about graph optimizations, not for users
    if threads:
        options.intra_op_num_threads = threads
    return options


class OnnxRunner:
    """An exported model in ONNX Runtime, behind :class:`~mnist_lit.inference.runners.Runner`'s interface.

    Args:
        path: the ``.onnx`` file written by ``python -m mnist_lit export``.
        threads: intra-op threads (ONNX Runtime's default, one per physical core, if None).

    Raises:
        OnnxModelError: the file is missing, not readable by ONNX Runtime, or has not the contract's input and output.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise OnnxModelError(f"{path}: no such file. Make one with `python -m mnist_lit export`.")
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise OnnxModelError(
                "running ONNX models needs onnxruntime: pip install onnxruntime (or pip install -e '.[export]')."
            ) from err
        try:
            self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as err:  # ONNX Runtime raises its own exception types, all meaning "not a usable model"
            raise OnnxModelError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err}).") from err
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise OnnxModelError(
                f"{path}: not an mnist_lit export: expected the input {INPUT_NAME!r} and the output {OUTPUT_NAME!r}, "
                f"found inputs {inputs} and outputs {outputs}."
            )
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.network_name: str = self.metadata.get("network", path.stem)
        self.source = path
        try:
            threshold = float(self.metadata.get("unsure_threshold", "0"))
        except ValueError:
            threshold = 0.0
        #: The export's "not sure" threshold, from its metadata (None: none, or an export older than calibration).
        self.unsure_threshold: float | None = threshold if threshold > 0 else None
        #: Whether the graph has the OOD score as a second output (exports older than it do not: their score is
        #: max-softmax, from the probabilities, with no threshold).
        self.has_score = SCORE_NAME in outputs
        self.ood_method: str = self.metadata.get("ood_method", "max_softmax") if self.has_score else "max_softmax"
        try:
            ood_threshold = float(self.metadata.get("ood_threshold", "inf"))
        except ValueError:
            ood_threshold = float("inf")
        #: The export's "not a digit" threshold, from its metadata (None: none fitted).
        self.ood_threshold: float | None = ood_threshold if self.has_score and np.isfinite(ood_threshold) else None

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 10) float32 probabilities for (N, 1, 28, 28) raw pixel values (uint8 or float, 0-255)."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: _checked(pixels)})[0]

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The probabilities, and the (N,) float32 OOD scores, in one run of the graph."""
        if not self.has_score:
            probabilities = self.probabilities(pixels)
            return probabilities, -probabilities.max(axis=1)
        probabilities, scores = self.session.run([OUTPUT_NAME, SCORE_NAME], {INPUT_NAME: _checked(pixels)})
        return probabilities, scores


def _checked(pixels: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(pixels, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != (1, IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"expected images of shape (N, 1, {IMAGE_SIDE}, {IMAGE_SIDE}), got {x.shape}")
    return x
