"""The PyTorch side of the mapping: an mnist_lit network's layers in Keras' order, those with weights, and what the
Flatten before a dense layer flattens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from mnist_lit.data.idx import IMAGE_SIDE
from mnist_lit.errors import UserError

LayerKind = Literal["conv", "dense"]


@dataclass(frozen=True)
class WeightedLayer:
    """A layer of an mnist_lit network that holds weights, with what the mapping needs to know about it.

    Attributes:
        name: its name inside the network (``0`` for ``net.0``), the prefix of its state-dict keys.
        module: the Conv2d or Linear.
        flatten_chw: for the first Linear after a Flatten, the (C, H, W) shape that the Flatten flattens.
    """

    name: str
    module: nn.Conv2d | nn.Linear
    flatten_chw: tuple[int, int, int] | None = None

    @property
    def kind(self) -> LayerKind:
        return "conv" if isinstance(self.module, nn.Conv2d) else "dense"

    def keras_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of the Keras kernel and bias that this layer's weights correspond to."""
        weight = tuple(self.module.weight.shape)
        kernel = (weight[2], weight[3], weight[1], weight[0]) if self.kind == "conv" else (weight[1], weight[0])
        return [kernel, (weight[0],)]

    def describe(self) -> str:
        m = self.module
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            return f"Conv2d net.{self.name} ({m.in_channels} -> {m.out_channels}, {kh}x{kw})"
        after = ", right after Flatten" if self.flatten_chw else ""
        return f"Linear net.{self.name} ({m.in_features} -> {m.out_features}{after})"


def network_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's layers in the order Keras would run them; only ``nn.Sequential`` stacks (all of mnist_lit's
    networks are) are mapped.

    A MaxPool2d followed by a ReLU is listed as the ReLU, then the MaxPool2d: the two commute exactly, and Keras
    models write the activation on the convolution, before the pooling.
    """
    if not isinstance(net, nn.Sequential):
        raise UserError(f"only nn.Sequential networks map to Keras' Sequential; this one is a {type(net).__name__}.")
    layers = list(net.named_children())
    for i in range(len(layers) - 1):
        if isinstance(layers[i][1], nn.MaxPool2d) and isinstance(layers[i + 1][1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return layers


def weighted_layers(net: nn.Module) -> list[WeightedLayer]:
    """The Conv2d and Linear layers of ``net``, in order, each with the Flatten shape it follows, if any.

    A forward pass of one blank image (in eval mode, without gradients) records what each Flatten receives, so no
    layer size is hard-coded.
    """
    layers = network_layers(net)
    flatten_inputs: dict[str, tuple[int, int, int]] = {}
    hooks = [
        module.register_forward_hook(lambda _m, args, _out, name=name: flatten_inputs.update({name: args[0].shape[1:]}))
        for name, module in layers
        if isinstance(module, nn.Flatten)
    ]
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 1, IMAGE_SIDE, IMAGE_SIDE, device=next(net.parameters()).device))
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    result, pending_flatten = [], None
    for name, module in layers:
        if isinstance(module, nn.Flatten):
            c, h, w = flatten_inputs[name]
            pending_flatten = (c, h, w)
        elif isinstance(module, nn.Conv2d):
            result.append(WeightedLayer(name, module))
        elif isinstance(module, nn.Linear):
            result.append(WeightedLayer(name, module, pending_flatten))
            pending_flatten = None
    return result


def pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def torch_padding(module: nn.Conv2d | nn.MaxPool2d) -> str:
    """``valid`` or ``same`` in Keras' words, for a layer's PyTorch padding."""
    padding = module.padding
    if isinstance(padding, str):
        return padding
    if pair(padding) == (0, 0):
        return "valid"
    kernel, stride = pair(module.kernel_size), pair(module.stride)
    if stride == (1, 1) and all(k % 2 == 1 and p == k // 2 for k, p in zip(kernel, pair(padding), strict=True)):
        return "same"
    return f"padding {pair(padding)}"
