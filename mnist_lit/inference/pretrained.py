"""``mnist_lit.load_pretrained(path)``: a trained network for notebooks and scripts, from a model folder, a ``.ckpt``
or an ``.onnx`` file, with one ``predict`` for pictures, arrays and paths.

A model folder loads with ``torch`` and ``safetensors`` alone, an ``.onnx`` file with ONNX Runtime alone; neither
imports Lightning (only a ``.ckpt`` does, to read the checkpoint). ``predict`` prepares each image as ``python -m
mnist_lit predict`` does (:func:`mnist_lit.data.images.mnist_preprocess`), or takes images already in MNIST's form
with ``preprocess=False``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_lit.data.idx import IMAGE_SIDE
from mnist_lit.data.images import (
    InputReadError,
    InvertMode,
    PredictInputError,
    mnist_preprocess,
    picture_intensities,
    read_input_file,
    to_intensities,
)
from mnist_lit.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from mnist_lit.inference.pretrained_network import PretrainedNetwork

#: What ``predict`` accepts: a path, a PIL image, an array (one image H x W, or a stack N x H x W / N x 1 x H x W),
#: or a list of them.
Images = Any


@dataclass
class Predictions:
    """What :meth:`Pretrained.predict` returns: NumPy arrays, one row per image.

    Attributes:
        digits: (N,) int64, the most likely digit of each image.
        probabilities: (N, 10) float32, the probabilities of the digits 0-9.
        unsure: (N,) bool, top probability under the network's unsure threshold (all False when it has none).
        names: where each image came from (its path, ``file.npy[i]``, or ``image[i]``).
        ood_scores: (N,) float32, how unlike a digit each image is (higher: less; :attr:`Pretrained.ood_method`).
        not_digit: (N,) bool, score above the network's "not a digit" threshold (all False when none was fitted).
    """

    digits: np.ndarray
    probabilities: np.ndarray
    unsure: np.ndarray
    names: list[str]
    ood_scores: np.ndarray
    not_digit: np.ndarray


class Pretrained:
    """A loaded network: :meth:`predict` for images, :attr:`module` for the PyTorch network where there is one.

    It is also a :class:`~mnist_lit.inference.runners.Runner` (``probabilities`` of raw-pixel batches), which is how
    ``classify`` and ``serve`` run a model folder; :attr:`runner` is the
    :class:`~mnist_lit.inference.runners.ScoredRunner` behind it (its ``predict`` takes raw-pixel batches).

    Attributes:
        network_name: the network class (``CompactCNN``...).
        source: the file the weights come from (a folder's ``model.safetensors``).
        module: the plain ``torch.nn.Module`` (raw pixels (N, 1, 28, 28) in, probabilities out); None for ONNX.
        config: a model folder's ``config.json`` (its preprocessing contract), else what the file records.
        unsure_threshold: the top probability under which an answer is unsure (None: no threshold).
        ood_method: the "not a digit" score (one of ``mnist_lit.models.ood.OOD_METHODS``), as the checkpoint's.
        ood_threshold: the score above which an image is "not a digit" (None: none fitted).
    """

    def __init__(
        self, network_name: str, source: Path, runner: Any, module: nn.Module | None, config: dict[str, Any]
    ) -> None:
        self.network_name = network_name
        self.source = source
        self.module = module
        self.config = config
        self.runner = runner
        self.unsure_threshold: float | None = runner.unsure_threshold
        self.ood_method: str = runner.ood_method
        self.ood_threshold: float | None = runner.ood_threshold

    def __repr__(self) -> str:
        kind = "ONNX Runtime" if self.module is None else "PyTorch"
        return f"Pretrained({self.network_name} from {self.source}, {kind})"

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 10) float32 probabilities for (N, 1, 28, 28) raw pixel values already in MNIST's form."""
        return self.runner.probabilities(pixels)

    def explain(self, pixels: np.ndarray, method: str) -> np.ndarray:
        """Attribution maps (N x 28 x 28) of each image's top digit (see :mod:`mnist_lit.reporting.explanations`)."""
        if not hasattr(self.runner, "explain"):
            raise UserError(f"{self.source}: an ONNX model has no gradients to explain; load the model folder.")
        return self.runner.explain(pixels, method)

    def predict(
        self, images: Images, preprocess: bool = True, invert: InvertMode = "auto", batch_size: int = 1024
    ) -> Predictions:
        """The digits, probabilities, OOD scores and "not a digit" verdicts of ``images``.

        Args:
            images: a path (a picture, or a ``.npy`` of one image or a stack), a PIL image, a uint8 (or 0-1 float)
                array of one image (H x W) or a stack (N x H x W or N x 1 x H x W), or a list of these.
            preprocess: put each image in MNIST's form first (invert if dark on light, crop, fit 20x20, centre of
                mass), as ``python -m mnist_lit predict`` does; False for images already 28x28 in MNIST's form (the
                MNIST test set).
            invert: ``auto`` (decide by the border), ``always`` or ``never``: the dark-on-light rule.
            batch_size: images per forward pass.
        """
        names, pixels = gather(images, preprocess, invert)
        rows = [self.runner.predict(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
        probabilities = np.concatenate([p for p, _ in rows]).astype(np.float32, copy=False)
        scores = np.concatenate([s for _, s in rows]).astype(np.float32, copy=False)
        threshold = self.unsure_threshold or 0.0
        return Predictions(
            digits=probabilities.argmax(axis=1),
            probabilities=probabilities,
            unsure=probabilities.max(axis=1) < threshold,
            names=names,
            ood_scores=scores,
            not_digit=scores > self.ood_threshold if self.ood_threshold is not None else np.zeros(len(scores), bool),
        )


def _as_items(images: Images) -> Iterable[Any]:
    if isinstance(images, (str, Path)) or _is_pil(images):
        return [images]
    if isinstance(images, np.ndarray):
        return [images]
    return list(images)


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.")


def gather(images: Images, preprocess: bool, invert: InvertMode) -> tuple[list[str], np.ndarray]:
    """(names, pixels (N, 1, 28, 28) float32) for :meth:`Pretrained.predict`'s inputs."""
    names: list[str] = []
    out: list[np.ndarray] = []
    for item in _as_items(images):
        try:
            if isinstance(item, (str, Path)):
                pairs = read_input_file(Path(item))
            elif _is_pil(item):
                pairs = [(f"image[{len(names)}]", picture_intensities(item))]
            else:
                array = np.asarray(item)
                if array.ndim == 4 and array.shape[1] == 1:
                    array = array[:, 0]
                stack = to_intensities(array)
                if stack.ndim == 2:
                    stack = stack[None]
                if stack.ndim != 3:
                    raise InputReadError(f"has shape {array.shape}; expected H x W, N x H x W or N x 1 x H x W")
                pairs = [(f"image[{len(names) + i}]", image) for i, image in enumerate(stack)]
            for name, values in pairs:
                if preprocess:
                    values = mnist_preprocess(values, invert)
                elif values.shape != (IMAGE_SIDE, IMAGE_SIDE):
                    raise InputReadError(
                        f"is {values.shape[0]} x {values.shape[1]} pixels; preprocess=False needs images already "
                        f"{IMAGE_SIDE} x {IMAGE_SIDE} in MNIST's form (or leave preprocess on)"
                    )
                names.append(name)
                out.append(np.asarray(values, dtype=np.float32))
        except InputReadError as err:
            where = item if isinstance(item, (str, Path)) else f"image {len(names)}"
            raise PredictInputError(f"{where}: {err}.") from err
    if not out:
        raise PredictInputError("predict: no images given.")
    return names, np.stack(out)[:, None]


class _TorchModule:
    """A plain network as a :class:`~mnist_lit.inference.runners.ScoredRunner`: probabilities, OOD scores (and
    attributions) for raw-pixel batches."""

    def __init__(self, module: PretrainedNetwork) -> None:
        import math

        self.module = module
        threshold = module.scalar("unsure_threshold")
        self.unsure_threshold = threshold if not math.isnan(threshold) and threshold > 0 else None
        self.ood_method = module.ood_method
        self.ood_threshold = module.ood_threshold

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.as_tensor(np.asarray(pixels, dtype=np.float32))).numpy()

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 10) probabilities and (N,) OOD scores for (N, 1, 28, 28) raw pixel values, in one pass."""
        import torch

        with torch.inference_mode():
            probabilities, scores = self.module.scored(torch.as_tensor(np.asarray(pixels, dtype=np.float32)))
        return probabilities.numpy(), scores.numpy()

    def explain(self, pixels: np.ndarray, method: str) -> np.ndarray:
        import torch

        from mnist_lit.reporting.explanations import attribute

        return attribute(self.module, torch.as_tensor(np.asarray(pixels, dtype=np.float32)), method)[0]


def load_folder(folder: Path) -> Pretrained:
    """A model folder, checked against its SHA256SUMS, as a :class:`Pretrained` (torch and safetensors only)."""
    try:
        from mnist_lit.inference.pretrained_network import WEIGHTS, PretrainedNetwork, read_config
    except ImportError as err:
        raise UserError(
            f"{folder}: loading a model folder needs huggingface_hub and safetensors: pip install -e '.[export]' "
            f"({err})."
        ) from err
    network = PretrainedNetwork.from_pretrained(folder)
    return Pretrained(network.network, folder / WEIGHTS, _TorchModule(network), network, read_config(folder))


def load_pretrained(path: str | Path) -> Pretrained:
    """A trained network from a model folder (``export --output DIR/``), a checkpoint (``.ckpt``) or an ``.onnx``.

    >>> model = load_pretrained("my_model/")  # doctest: +SKIP
    >>> model.predict(["seven.png"]).digits  # doctest: +SKIP
    array([7])
    """
    path = Path(path)
    if path.is_dir():
        return load_folder(path)
    if path.suffix.lower() == ".onnx":
        from mnist_lit.inference.onnx_runner import OnnxRunner

        runner = OnnxRunner(path)
        return Pretrained(runner.network_name, path, runner, None, dict(runner.metadata))
    from mnist_lit.inference.pretrained_network import network_from_trained  # a checkpoint: Lightning reads it
    from mnist_lit.training.checkpoints import load_trained_network

    network = network_from_trained(load_trained_network(path, option="load_pretrained"))
    return Pretrained(network.network, path, _TorchModule(network), network, network.init_config)
