"""A trained network as a plain function from raw pixels to probabilities, in PyTorch (ONNX Runtime: :mod:`.runners`).

Deployment targets (an ONNX file, the web app) take raw pixel values, 0 to 255, light digits on a dark background,
as MNIST's are; the checkpoint's normalization happens inside, so a caller cannot get it wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mnist_lit.data.datamodule import MNIST_MEAN, MNIST_STD, Normalization
from mnist_lit.models.ood import OODScorer, ood_score, uses_features
from mnist_lit.training.checkpoints import TrainedNetwork, load_trained_network


class PixelClassifier(nn.Module):
    """Wraps a network: raw pixels (N x 1 x 28 x 28, float, 0-255) in, class probabilities (N x 10) out; and, by
    :meth:`scored`, the OOD score too (higher: less like a digit; see :mod:`mnist_lit.models.ood`).

    The probabilities are ``softmax(logits / temperature)``: the checkpoint's temperature (1 when uncalibrated) is a
    buffer, so an ONNX export of this module divides by it inside its graph. The OOD score's method is fixed when the
    module is built (a plain attribute, so an export has one graph for it), its statistics are buffers.
    """

    temperature: Tensor
    class_means: Tensor
    whitening: Tensor

    def __init__(
        self, net: nn.Module, normalization: Normalization, temperature: float = 1.0, ood: OODScorer | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.normalization = normalization
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        #: The OOD score this module computes: one of :data:`~mnist_lit.models.ood.OOD_METHODS`.
        self.ood_method = ood.method_name if ood is not None else "max_softmax"
        #: Its "not a digit" threshold (None: none fitted); not used in the graph.
        self.ood_threshold: float | None = float(ood.threshold) if ood is not None and ood.fitted else None
        if uses_features(self.ood_method) and ood is not None:
            self.register_buffer("class_means", ood.class_means.detach().clone())
            self.register_buffer("whitening", ood.whitening.detach().clone())

    @classmethod
    def of(cls, trained: TrainedNetwork) -> PixelClassifier:
        """The module for a loaded checkpoint, at its temperature, with its OOD score, in eval mode."""
        model = trained.model
        return cls(model.net, trained.normalization, float(model.temperature), model.ood).eval()

    def _normalized(self, pixels: Tensor) -> Tensor:
        x = pixels / 255.0
        if self.normalization == "standardize":
            x = (x - MNIST_MEAN) / MNIST_STD
        return x

    def logits(self, pixels: Tensor) -> Tensor:
        """The temperature-scaled logits (what attributions explain: see :mod:`mnist_lit.reporting.explanations`)."""
        return self.net(self._normalized(pixels)) / self.temperature

    def forward(self, pixels: Tensor) -> Tensor:
        return self.logits(pixels).softmax(dim=1)

    def scored(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """The probabilities (N x 10) and the OOD score (N,) in one pass."""
        x = self._normalized(pixels)
        if uses_features(self.ood_method):
            features = self.net[:-1](x)  # type: ignore[index]  # a network with a fitted feature score ends in Linear
            raw = self.net[-1](features)  # type: ignore[index]
            score = ood_score(self.ood_method, raw, features, self.temperature, self.class_means, self.whitening)
        else:
            raw = self.net(x)
            score = ood_score(self.ood_method, raw, None, self.temperature)
        return (raw / self.temperature).softmax(dim=1), score


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
        #: The checkpoint's OOD score and its "not a digit" threshold (None: none fitted).
        self.ood_method = self.module.ood_method
        self.ood_threshold = self.module.ood_threshold

    @torch.inference_mode()
    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.module(torch.as_tensor(np.asarray(pixels, dtype=np.float32))).numpy()

    @torch.inference_mode()
    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 10) probabilities and (N,) OOD scores for (N, 1, 28, 28) raw pixel values."""
        probabilities, scores = self.module.scored(torch.as_tensor(np.asarray(pixels, dtype=np.float32)))
        return probabilities.numpy(), scores.numpy()

    def explain(self, pixels: np.ndarray, method: str) -> np.ndarray:
        """Attribution maps (N x 28 x 28) of each image's top digit, by ``method`` (see
        :mod:`mnist_lit.reporting.explanations`)."""
        from mnist_lit.reporting.explanations import attribute  # Captum: an optional extra, imported only here

        return attribute(self.module, torch.as_tensor(np.asarray(pixels, dtype=np.float32)), method)[0]
