"""ONNX: a trained network as one self-contained file that ONNX Runtime runs without PyTorch, and running it.

The exported model's contract (also stored in its ``metadata_props``):

- input ``image``: float32, (N, 1, 28, 28), N dynamic; raw pixel values 0 to 255, MNIST polarity (a light digit
  on a dark background);
- output ``probabilities``: float32, (N, 10), the softmax over the digits 0-9.

The checkpoint's normalization is inside the graph (:class:`~mnist_lit.inference.PixelClassifier` is what is
exported), so no deployer can get it wrong; the network is exported in eval mode, so no Dropout node is left.
``onnx``, ``onnxscript`` (the exporter) and ``onnxruntime`` are an optional extra (``pip install -e '.[export]'``);
they are imported only in the functions that use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mnist_lit.checkpoints import TrainedNetwork
from mnist_lit.data.files import IMAGE_SIDE, NUM_CLASSES
from mnist_lit.errors import CheckpointError, UserError
from mnist_lit.inference import PixelClassifier
from mnist_lit.models.base import MNISTClassifier

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
INPUT_CONTRACT = (
    f"float32 (N, 1, {IMAGE_SIDE}, {IMAGE_SIDE}), N dynamic: raw pixel values 0-255, MNIST polarity (a light digit "
    "on a dark background)"
)
OUTPUT_CONTRACT = f"float32 (N, {NUM_CLASSES}): the probabilities of the digits 0-9 (softmax)"


class OnnxModelError(UserError):
    """An ONNX file that is missing, unreadable, or not an mnist_lit export; or ONNX Runtime is not installed."""


class OnnxExportError(UserError):
    """A network that could not be exported to ONNX as the contract requires."""


def export_onnx(trained: TrainedNetwork) -> bytes:
    """The network, with its normalization and a softmax, as one self-contained ONNX model (the file's bytes).

    Exported with ``torch.export`` (``dynamo=True``: the TorchScript exporter is deprecated), the weights inside
    the file (``external_data=False``), the batch dimension dynamic; the contract and the network's name, its
    normalization and the source checkpoint are written into the model's metadata.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript; a clear message beats its ImportError)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise OnnxExportError(
            f"exporting to ONNX needs onnx and onnxscript: pip install onnx onnxscript (or pip install -e "
            f"'.[export]') ({err})."
        ) from err
    module = PixelClassifier(trained.model.net, trained.normalization).eval()
    example = torch.zeros(2, 1, IMAGE_SIDE, IMAGE_SIDE)
    try:
        program = torch.onnx.export(
            module, (example,), dynamo=True, external_data=False, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"pixels": {0: torch.export.Dim("N")}},
        )  # fmt: skip
    except Exception as err:  # the exporter raises many types; each means this network cannot be exported as is
        raise OnnxExportError(f"torch.onnx.export failed for {trained.name} ({type(err).__name__}: {err}).") from err
    proto = program.model_proto
    dropouts = [node.name for node in proto.graph.node if node.op_type == "Dropout"]
    if dropouts:
        raise OnnxExportError(f"the exported graph still has Dropout nodes ({', '.join(dropouts)}); not written.")
    metadata = {
        "network": trained.name,
        "normalization": trained.normalization,
        "source_checkpoint": str(trained.path),
        "input": f"{INPUT_NAME}: {INPUT_CONTRACT}",
        "output": f"{OUTPUT_NAME}: {OUTPUT_CONTRACT}",
        "exported_by": "mnist_lit export",
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"{trained.name}, exported by mnist_lit. Input {INPUT_NAME}: {INPUT_CONTRACT}. "
        f"Output {OUTPUT_NAME}: {OUTPUT_CONTRACT}. The normalization ({trained.normalization}) is inside the graph."
    )
    return proto.SerializeToString()


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
    """An exported model in ONNX Runtime, behind :class:`~mnist_lit.inference.Runner`'s interface.

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

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 10) float32 probabilities for (N, 1, 28, 28) raw pixel values (uint8 or float, 0-255)."""
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (1, IMAGE_SIDE, IMAGE_SIDE):
            raise ValueError(f"expected images of shape (N, 1, {IMAGE_SIDE}, {IMAGE_SIDE}), got {x.shape}")
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


class OnnxPredictor(MNISTClassifier):
    """``predict`` with an exported model: ONNX Runtime in place of the network, the rest of ``predict`` unchanged
    (the data module's inputs and preprocessing, the table, ``predictions.csv``).

    It stands in for the configured network, so it is an :class:`MNISTClassifier` (the config's callbacks accept
    nothing else), with no weights of its own; it only predicts. The data module hands a network normalized images
    (it normalizes after the transfer to the device), but the ONNX model normalizes inside its graph and takes raw
    pixels. So each batch's raw uint8 pixels are taken from the data module's predict set, by the index each batch
    carries: no round trip through the normalization, and the probabilities are exactly those :class:`OnnxRunner`
    gives for the same pixels.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime's intra-op threads (its default if None).
    """

    def __init__(self, path: str, threads: int | None = None) -> None:
        runner = OnnxRunner(path, threads)
        super().__init__(nn.Identity(), init="torch")
        self.runner = runner

    @classmethod
    def for_config(cls, path: str, configured: type) -> OnnxPredictor:
        """Open ``path``; refuse an export of another network than the config selects, as with checkpoints."""
        predictor = cls(path)
        if predictor.runner.network_name != configured.__name__:
            raise CheckpointError(
                f"--ckpt_path {path} holds a {predictor.runner.network_name}, but the config selects "
                f"{configured.__name__}. Use the config of the network that was exported, or set model.class_path "
                "to match."
            )
        return predictor

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("an exported ONNX model only predicts (from raw pixels, in predict_step)")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Class probabilities (N x 10) from ONNX Runtime, for the batch's raw pixels."""
        index = batch[1].cpu()
        raw = self.trainer.datamodule.data_predict.images[index].unsqueeze(1)
        return torch.from_numpy(self.runner.probabilities(raw.cpu().numpy()))
