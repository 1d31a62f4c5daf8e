"""ONNX: a trained network as one self-contained file that ONNX Runtime runs without PyTorch, and running it.

The exported model's contract (also stored in its ``metadata_props``):

- input ``image``: float32, (N, 1, 28, 28), N dynamic; raw pixel values 0 to 255, MNIST polarity (a light digit
  on a dark background);
- output ``probabilities``: float32, (N, 10), the softmax over the digits 0-9 of the logits divided by the
  checkpoint's temperature (a Div node in the graph; 1 for an uncalibrated checkpoint);
- output ``ood_score``: float32, (N,), how unlike a digit each image is (higher: less), the checkpoint's OOD score
  (one of :data:`~mnist_lit.models.ood.OOD_METHODS`, see :mod:`mnist_lit.models.ood`) computed in the graph;
- metadata ``temperature`` and ``unsure_threshold`` (the top probability under which an answer is "not sure";
  0: none), ``ood_method`` and ``ood_threshold`` (the score above which an image is "not a digit"; ``inf``: none
  fitted), which :class:`~mnist_lit.inference.onnx_runner.OnnxRunner` reads.

The checkpoint's normalization is inside the graph (what is exported is
:class:`~mnist_lit.inference.torch_runner.PixelClassifier`), so no deployer can get it wrong; the network is exported
in eval mode, so no Dropout node is left. ``onnx``, ``onnxscript`` (the exporter) and ``onnxruntime`` are an optional
extra (``pip install -e '.[export]'``); they are imported only in the functions that use them. Running an export
needs no torch: see :mod:`mnist_lit.inference.onnx_runner`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mnist_lit.callbacks.run_folder import require_datamodule
from mnist_lit.data.normalization import IMAGE_SIDE
from mnist_lit.errors import CheckpointError, UserError
from mnist_lit.inference.onnx_runner import (
    INPUT_CONTRACT,
    INPUT_NAME,
    OUTPUT_CONTRACT,
    OUTPUT_NAME,
    SCORE_CONTRACT,
    SCORE_NAME,
    OnnxRunner,
)
from mnist_lit.inference.torch_runner import PixelClassifier
from mnist_lit.models.base import MNISTClassifier
from mnist_lit.models.ood import OOD_METHODS
from mnist_lit.training.checkpoints import TrainedNetwork


class OnnxExportError(UserError):
    """A network that could not be exported to ONNX as the contract requires."""


class _Scored(nn.Module):
    """The exported module: :meth:`PixelClassifier.scored` as ``forward``, so the graph has both outputs."""

    def __init__(self, module: PixelClassifier) -> None:
        super().__init__()
        self.module = module

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        return self.module.scored(pixels)


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
    module = _Scored(PixelClassifier.of(trained)).eval()
    example = torch.zeros(2, 1, IMAGE_SIDE, IMAGE_SIDE)
    try:
        program = torch.onnx.export(
            module, (example,), dynamo=True, external_data=False, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, SCORE_NAME],
            dynamic_shapes={"pixels": {0: torch.export.Dim("N")}},
        )  # fmt: skip
    except Exception as err:  # the exporter raises many types; each means this network cannot be exported as is
        raise OnnxExportError(f"torch.onnx.export failed for {trained.name} ({type(err).__name__}: {err}).") from err
    if program is None:
        raise OnnxExportError(f"torch.onnx.export returned no program for {trained.name}.")
    proto = program.model_proto
    dropouts = [node.name for node in proto.graph.node if node.op_type == "Dropout"]
    if dropouts:
        raise OnnxExportError(f"the exported graph still has Dropout nodes ({', '.join(dropouts)}); not written.")
    metadata = {
        "network": trained.name,
        "normalization": trained.normalization,
        "source_checkpoint": str(trained.path),
        "temperature": repr(float(trained.model.temperature)),
        "unsure_threshold": repr(float(trained.model.unsure_threshold)),
        "ood_method": trained.model.ood.method_name,
        "ood_threshold": repr(float(trained.model.ood.threshold)),
        "input": f"{INPUT_NAME}: {INPUT_CONTRACT}",
        "output": f"{OUTPUT_NAME}: {OUTPUT_CONTRACT}",
        "output_ood_score": f"{SCORE_NAME}: {SCORE_CONTRACT}",
        "exported_by": "mnist_lit export",
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"{trained.name}, exported by mnist_lit. Input {INPUT_NAME}: {INPUT_CONTRACT}. "
        f"Output {OUTPUT_NAME}: {OUTPUT_CONTRACT}. Output {SCORE_NAME}: {SCORE_CONTRACT}. "
        f"The normalization ({trained.normalization}) is inside the graph."
    )
    return proto.SerializeToString()


class OnnxPredictor(MNISTClassifier):
    """``predict`` with an exported model: ONNX Runtime in place of the network, the rest of ``predict`` unchanged
    (the data module's inputs and preprocessing, the table, ``predictions.csv``).

    It stands in for the configured network, so it is an :class:`MNISTClassifier` (the config's callbacks accept
    nothing else), with no weights of its own; it only predicts. The data module hands a network normalized images
    (it normalizes after the transfer to the device), but the ONNX model normalizes inside its graph and takes raw
    pixels. So each batch's raw uint8 pixels are asked of the data module
    (:meth:`~mnist_lit.data.datamodule.MNISTDataModule.predict_pixels`), by the index each batch carries: no round trip
    through the normalization, and the probabilities are exactly those :class:`OnnxRunner` gives for the same pixels.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime's intra-op threads (its default if None).
    """

    def __init__(self, path: str, threads: int | None = None) -> None:
        runner = OnnxRunner(path, threads)
        super().__init__(nn.Identity(), init="torch")
        self.runner = runner
        self.unsure_threshold.fill_(runner.unsure_threshold or 0.0)
        # The export's score and threshold, for the writer's table (the statistics stay in the graph).
        known = runner.ood_method in OOD_METHODS  # an export from a later version may name a score this one lacks
        self.ood.method.fill_(OOD_METHODS.index(runner.ood_method) if known else 0)
        self.ood.threshold.fill_(float("inf") if runner.ood_threshold is None else runner.ood_threshold)

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

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Class probabilities (N x 10), OOD scores and verdicts from ONNX Runtime, for the batch's raw pixels."""
        raw = require_datamodule(self, self.trainer).predict_pixels(batch[1])
        probabilities, scores = self.runner.predict(raw.cpu().numpy())
        score = torch.from_numpy(scores)
        return {
            "probabilities": torch.from_numpy(probabilities),
            "ood_score": score,
            "not_digit": self.ood.not_digit(score),
        }
