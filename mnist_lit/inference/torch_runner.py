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
from mnist_lit.training.checkpoints import load_trained_network


class PixelClassifier(nn.Module):
    """Wraps a network: raw pixels (N x 1 x 28 x 28, float, 0-255) in, class probabilities (N x 10) out."""

    def __init__(self, net: nn.Module, normalization: Normalization) -> None:
        super().__init__()
        self.net = net
        self.normalization = normalization

    def forward(self, pixels: Tensor) -> Tensor:
        x = pixels / 255.0
        if self.normalization == "standardize":
            x = (x - MNIST_MEAN) / MNIST_STD
        return self.net(x).softmax(dim=1)


class TorchRunner:
    """A checkpoint's network, in eval mode on the CPU, behind :class:`~mnist_lit.inference.runners.Runner`."""

    def __init__(self, ckpt_path: str | Path) -> None:
        trained = load_trained_network(ckpt_path)
        self.network_name = trained.name
        self.source = trained.path
        self.module = PixelClassifier(trained.model, trained.normalization).eval()

    @torch.inference_mode()
    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self.module(torch.as_tensor(np.asarray(pixels, dtype=np.float32))).numpy()
