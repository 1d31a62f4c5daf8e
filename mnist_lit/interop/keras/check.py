"""Whether a Keras model computes what an mnist_lit network computes: the weights' shapes, then, for files that keep
the architecture, each layer's operation (activation, padding, pooling, strides), both described in the same words."""

from __future__ import annotations

from typing import Any

from torch import nn

from mnist_lit.interop.keras.files import KERAS_CLASSES, KerasFileError, KerasModelFile, as_text
from mnist_lit.interop.keras.network import network_layers, pair, torch_padding, weighted_layers

#: Layers that do nothing at inference, so they do not count when two models are compared.
INFERENCE_NO_OPS = {"InputLayer", "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout"}


def _conv_op(kernel: Any, strides: Any, padding: str, dilation: Any = 1, groups: int = 1) -> str:
    (kh, kw), (sh, sw) = pair(kernel), pair(strides)
    text = f"Conv2D {kh}x{kw} stride {sh}x{sw} {padding}"
    if pair(dilation) != (1, 1):
        text += f" dilation {pair(dilation)}"
    return text + (f" groups {groups}" if groups != 1 else "")


def _pool_op(pool: Any, strides: Any, padding: str) -> str:
    (ph, pw), (sh, sw) = pair(pool), pair(strides)
    return f"MaxPooling2D {ph}x{pw} stride {sh}x{sw} {padding}"


def torch_ops(net: nn.Module) -> list[str]:
    """What the network computes at inference, layer by layer, in the words :func:`keras_ops` uses.

    Dropout does nothing at inference and is left out; the network ends in logits (``predict`` applies softmax).
    """
    ops = []
    for _, m in network_layers(net):
        if isinstance(m, nn.Conv2d):
            ops.append(_conv_op(m.kernel_size, m.stride, torch_padding(m), m.dilation, m.groups))
        elif isinstance(m, nn.MaxPool2d):
            padding = torch_padding(m) + (" ceil" if m.ceil_mode else "")
            ops.append(_pool_op(m.kernel_size, m.stride if m.stride is not None else m.kernel_size, padding))
        elif isinstance(m, nn.ReLU):
            ops.append("relu")
        elif isinstance(m, nn.Flatten):
            ops.append("Flatten")
        elif isinstance(m, nn.Linear):
            ops.append("Dense")
        elif isinstance(m, nn.Softmax):
            ops.append("softmax")
        elif not isinstance(m, nn.Dropout):
            ops.append(type(m).__name__)
    return ops


def _activation_ops(activation: Any) -> list[str]:
    if isinstance(activation, dict):  # a serialized activation object: its registered name, or its class
        activation = activation.get("config", {}).get("name") or activation.get("class_name")
    name = str(activation or "linear").lower()
    return [] if name == "linear" else [name]


def keras_ops(config_layers: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """What a saved Keras model computes at inference, layer by layer, as (operation, layer name) pairs, in the
    words of :func:`torch_ops`. A Conv2D or Dense with an activation is two operations."""
    ops: list[tuple[str, str]] = []
    for layer in config_layers:
        cls, cfg = layer["class_name"], layer["config"]
        name = as_text(cfg.get("name", cls))
        channels_first = " channels_first" if cfg.get("data_format") == "channels_first" else ""
        if cls in INFERENCE_NO_OPS:
            continue
        if cls == "Conv2D":
            op = _conv_op(
                cfg.get("kernel_size", 1), cfg.get("strides", 1), cfg.get("padding", "valid"),
                cfg.get("dilation_rate", 1), cfg.get("groups", 1),
            )  # fmt: skip
            ops += [(op + channels_first, name)] + [(a, name) for a in _activation_ops(cfg.get("activation"))]
        elif cls == "MaxPooling2D":
            pool = cfg.get("pool_size", 2)
            strides = cfg.get("strides") or pool
            ops.append((_pool_op(pool, strides, cfg.get("padding", "valid")) + channels_first, name))
        elif cls == "Flatten":
            ops.append(("Flatten" + channels_first, name))
        elif cls == "Dense":
            ops += [("Dense", name)] + [(a, name) for a in _activation_ops(cfg.get("activation"))]
        elif cls == "Activation":
            ops += [(a, name) for a in _activation_ops(cfg.get("activation"))]
        elif cls == "ReLU" and not any(cfg.get(k) for k in ("max_value", "negative_slope", "threshold")):
            ops.append(("relu", name))
        elif cls == "Softmax":
            ops.append(("softmax", name))
        else:
            ops.append((cls, name))
    return ops


def check_architecture(model: KerasModelFile, net: nn.Module, network: str) -> None:
    """Refuse a Keras model whose weights or saved layers differ from ``net``'s, naming the first difference.

    Shapes first (every file has them), then, for files with a saved config, what each layer computes: activation,
    padding, pooling, strides. Dropout is ignored (it does nothing at inference), and so is a final softmax: the
    network ends in logits, and both sides' probabilities are their softmax.
    """
    expected = weighted_layers(net)
    if not model.layers:
        raise KerasFileError(f"{model.path}: {model.format} without any weights (was the model built?).")
    for index, (ours, theirs) in enumerate(zip(expected, model.layers, strict=False), start=1):
        want = ours.keras_shapes()
        found = [tuple(a.shape) for a in theirs.arrays]
        if theirs.kind != ours.kind or found != want:
            raise KerasFileError(
                f"{model.path}: it does not fit {network}: the first layer that differs is layer {index} of those "
                f"with weights, {theirs.describe()} in the file, {ours.describe()} in the network: expected a "
                f"{KERAS_CLASSES[ours.kind]} with kernel and bias {_shapes(want)}, found weights {_shapes(found)}. "
                "Choose the config of the network the Keras model was built as (or set its sizes, model.init_args)."
            )
    if len(model.layers) != len(expected):
        if len(model.layers) > len(expected):
            extra = f"an extra {model.layers[len(expected)].describe()} after them"
        else:
            extra = f"nothing for {expected[len(model.layers)].describe()}"
        raise KerasFileError(
            f"{model.path}: it does not fit {network}: the file has {len(model.layers)} layers with weights, the "
            f"network {len(expected)}; the first {min(len(expected), len(model.layers))} match, then the file has "
            f"{extra}."
        )
    if model.config_layers is None:
        return
    theirs_ops = keras_ops(model.config_layers)
    ours_ops = torch_ops(net)
    if theirs_ops and theirs_ops[-1][0] == "softmax":
        theirs_ops.pop()
    if ours_ops and ours_ops[-1] == "softmax":
        ours_ops.pop()
    for index in range(max(len(theirs_ops), len(ours_ops))):
        found_op, layer = theirs_ops[index] if index < len(theirs_ops) else ("nothing (the model ends)", "")
        want_op = ours_ops[index] if index < len(ours_ops) else "nothing (the network ends)"
        if found_op != want_op:
            where = f"its layer '{layer}'" if layer else "after its last layer"
            raise KerasFileError(
                f"{model.path}: the weights fit {network}, but the saved model computes something else, so its "
                f"predictions would differ: {where} does {found_op}, where {network} does {want_op} "
                f"(operation {index + 1}: {', '.join(ours_ops)})."
            )


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return " and ".join(str(s) for s in shapes) if shapes else "none"
