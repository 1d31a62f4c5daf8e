"""The weight layouts of Keras and PyTorch mapped onto each other, both ways, for whole networks.

- Conv2D kernels are (kh, kw, in, out) in Keras and (out, in, kh, kw) in PyTorch: a transpose of axes
  (3, 2, 0, 1), as Keras' own torch backend does.
- Dense kernels are (in, out) in Keras, ``nn.Linear`` weights (out, in): a transpose.
- ``Flatten``: Keras flattens a channels-last feature map in (H, W, C) order, PyTorch a channels-first one in
  (C, H, W) order. The rows of the first dense kernel after it are therefore re-ordered from (H, W, C) to (C, H, W)
  (and back on export). Without this a model loads without any error and predicts nonsense.
- Biases are the same vectors on both sides.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from mnist_lit.data.normalization import MNIST_MEAN, MNIST_STD, Normalization
from mnist_lit.errors import UserError
from mnist_lit.interop.keras.files import KerasModelFile
from mnist_lit.interop.keras.network import torch_padding, weighted_layers


def conv_kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """A Keras Conv2D kernel (kh, kw, in, out) as a PyTorch Conv2d weight (out, in, kh, kw)."""
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def conv_kernel_to_keras(weight: np.ndarray) -> np.ndarray:
    """A PyTorch Conv2d weight (out, in, kh, kw) as a Keras Conv2D kernel (kh, kw, in, out)."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def dense_kernel_to_torch(kernel: np.ndarray, flatten_chw: tuple[int, int, int] | None = None) -> np.ndarray:
    """A Keras Dense kernel (in, out) as a PyTorch Linear weight (out, in).

    ``flatten_chw``: the (C, H, W) shape that a Flatten right before this layer flattens; the kernel's rows, in
    Keras' (H, W, C) order, are then re-ordered to PyTorch's (C, H, W).
    """
    if flatten_chw is not None:
        c, h, w = flatten_chw
        kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
    return np.ascontiguousarray(kernel.T)


def dense_kernel_to_keras(weight: np.ndarray, flatten_chw: tuple[int, int, int] | None = None) -> np.ndarray:
    """A PyTorch Linear weight (out, in) as a Keras Dense kernel (in, out); the inverse of
    :func:`dense_kernel_to_torch`."""
    kernel = weight.T
    if flatten_chw is not None:
        c, h, w = flatten_chw
        kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
    return np.ascontiguousarray(kernel)


def keras_to_state_dict(model: KerasModelFile, net: nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s state dict with the Keras file's weights, mapped (call :func:`check_architecture` first)."""
    state = {}
    for ours, theirs in zip(weighted_layers(net), model.layers, strict=True):
        kernel, bias = (a.astype(np.float32) for a in theirs.arrays)
        if ours.kind == "conv":
            weight = conv_kernel_to_torch(kernel)
        else:
            weight = dense_kernel_to_torch(kernel, ours.flatten_chw)
        state[f"{ours.name}.weight"] = torch.from_numpy(weight)
        state[f"{ours.name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    return state


def network_to_keras_weights(net: nn.Module, normalization: Normalization = "unit") -> list[list[np.ndarray]]:
    """Each weighted layer's [kernel, bias] in Keras' layouts, for a Keras model fed pixels / 255 (as both notebooks'
    models are).

    A network trained on standardized pixels ((x - mean) / std) gets the standardization folded into its first
    convolution, exactly for valid padding: W' = W / std and b' = b - (mean / std) * sum(W).
    """
    result = []
    for index, layer in enumerate(weighted_layers(net)):
        module = layer.module
        if module.bias is None:
            raise UserError(f"layer {layer.name} has no bias; a Keras Conv2D or Dense of the notebooks has one.")
        weight, bias = module.weight.detach().double().cpu(), module.bias.detach().double().cpu()
        if index == 0 and normalization == "standardize":
            if not isinstance(module, nn.Conv2d) or torch_padding(module) != "valid":
                raise UserError("a standardized network can be exported to Keras only if it starts with a valid conv.")
            bias = bias - (MNIST_MEAN / MNIST_STD) * weight.sum(dim=(1, 2, 3))
            weight = weight / MNIST_STD
        weight_np, bias_np = weight.float().numpy(), bias.float().numpy()
        if layer.kind == "conv":
            result.append([conv_kernel_to_keras(weight_np), bias_np])
        else:
            result.append([dense_kernel_to_keras(weight_np, layer.flatten_chw), bias_np])
    return result


def fold_temperature(net: nn.Module, temperature: float) -> nn.Module:
    """``net`` with its final Linear layer's weights and bias divided by ``temperature`` (a copy; ``net`` itself when
    T is 1), so that a plain Keras Sequential, whose last Dense layer applies the softmax, gives the calibrated
    probabilities: softmax((W x + b) / T) = softmax((W / T) x + b / T), with no custom layer."""
    if temperature == 1.0:
        return net
    folded = copy.deepcopy(net)
    last = [m for m in folded.modules() if any(True for _ in m.parameters(recurse=False))][-1]
    if not isinstance(last, nn.Linear):
        raise UserError(
            f"the checkpoint's temperature ({temperature:.4f}) can be folded into a final Linear layer only; this "
            f"network ends in {type(last).__name__}. Export to ONNX, which carries the temperature in its graph."
        )
    with torch.no_grad():
        last.weight.div_(temperature)
        if last.bias is not None:
            last.bias.div_(temperature)
    return folded
