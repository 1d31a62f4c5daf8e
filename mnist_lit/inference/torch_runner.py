"""A trained network as a plain function from raw pixels to probabilities, in PyTorch (ONNX Runtime: :mod:`.runners`).

Deployment targets (an ONNX file, the web app) take raw pixel values, 0 to 255, light digits on a dark background,
as MNIST's are; the checkpoint's normalization happens inside, so a caller cannot get it wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mnist_lit.data.normalization import Normalization, normalize
from mnist_lit.training.checkpoints import TrainedNetwork, load_trained_network


class PixelClassifier(nn.Module):
    """Wraps a network: raw pixels (N x 1 x 28 x 28, float, 0-255) in, class probabilities (N x 10) out.

    The probabilities are ``softmax(logits / temperature)``: the checkpoint's temperature (1 when uncalibrated) is a
    buffer, so an ONNX export of this module divides by it inside its graph.
    """

    def __init__(self, net: nn.Module, normalization: Normalization, temperature: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.normalization = normalization
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    @classmethod
    def of(cls, trained: TrainedNetwork) -> PixelClassifier:
        """The module for a loaded checkpoint, at its temperature, in eval mode."""
        return cls(trained.model.net, trained.normalization, float(trained.model.temperature)).eval()

    def logits(self, pixels: Tensor) -> Tensor:
        """The temperature-scaled logits (what attributions explain: see :mod:`mnist_lit.reporting.explanations`)."""
        return self.net(normalize(pixels, self.normalization)) / self.temperature

    def forward(self, pixels: Tensor) -> Tensor:
        return self.logits(pixels).softmax(dim=1)


class TorchRunner:
    """A checkpoint's network, in eval mode on the CPU, behind :class:`~mnist_lit.inference.runners.Runner`."""

    def __init__(self, ckpt_path: str | Path) -> None:
        trained = load_trained_network(ckpt_path)
        self.network_name = trained.name
        self.source = trained.path
        self.module = PixelClassifier.of(trained)
        threshold = float(trained.model.unsure_threshold)
        #: The checkpoint's "not sure" threshold (None: it has none, it was never calibrated).
        self.unsure_threshold: float | None = threshold if threshold > 0 else None
        self.temperature = float(trained.model.temperature)

    @torch.inference_mode()
    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.module(torch.as_tensor(np.asarray(pixels, dtype=np.float32))).numpy()

    def explain(self, pixels: np.ndarray, method: str) -> np.ndarray:
        """Attribution maps (N x 28 x 28) of each image's top digit, by ``method`` (see
        :mod:`mnist_lit.reporting.explanations`)."""
        from mnist_lit.reporting.explanations import attribute  # Captum: an optional extra, imported only here

        return attribute(self.module, torch.as_tensor(np.asarray(pixels, dtype=np.float32)), method)[0]
