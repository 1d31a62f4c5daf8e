"""Keras weights <-> mnist_lit networks: the one place where the two layouts are mapped onto each other.

The mapping (both directions, layers matched by order, checked by shape):

- Conv2D kernels are (kh, kw, in, out) in Keras and (out, in, kh, kw) in PyTorch: a transpose of axes
  (3, 2, 0, 1), as Keras' own torch backend does.
- Dense kernels are (in, out) in Keras, ``nn.Linear`` weights (out, in): a transpose.
- ``Flatten``: Keras flattens a channels-last feature map in (H, W, C) order, PyTorch a channels-first one in
  (C, H, W) order. The rows of the first dense kernel after it are therefore re-ordered from (H, W, C) to (C, H, W)
  (and back on export). Without this a model loads without any error and predicts nonsense.
- Biases are the same vectors on both sides.

Reading needs ``h5py`` and the standard library only (never TensorFlow, nor Keras): a Keras 3 ``.keras`` file is a
zip holding ``config.json`` and ``model.weights.h5``; a legacy ``.h5`` (Keras 2 or 3 ``model.save``) holds the
model's config as an attribute and its weights under ``model_weights/<layer>``, in the order of the attribute
``layer_names``; a Keras 3 ``.weights.h5`` holds ``layers/<class_name>[_N]/vars/<i>``, with no config.

Writing goes through the ``keras`` package itself (an optional dependency), on whatever backend it runs (PyTorch
where none is configured). Both Keras file formats are Keras' own serializations: ``config.json`` has changed
fields between Keras 3 releases, and ``.weights.h5`` paths follow Keras' internal naming of saveables, so a file
written by hand with h5py would be right only for the Keras version it was copied from. Keras writing its own files
is right for the Keras the user has, and the export loads the written file back with that Keras to check it.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mnist_lit.data.datamodule import MNIST_MEAN, MNIST_STD, Normalization
from mnist_lit.data.files import IMAGE_SIDE
from mnist_lit.errors import UserError

LayerKind = Literal["conv", "dense"]

#: Keras class names of the layers that hold weights, and the names Keras 3 gives their groups in weight files.
KERAS_CLASSES: dict[str, str] = {"conv": "Conv2D", "dense": "Dense"}
SAVE_NAME_CLASSES = {"conv2d": "Conv2D", "dense": "Dense"}

#: Layers that do nothing at inference, so they do not count when two models are compared.
INFERENCE_NO_OPS = {"InputLayer", "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout"}


class KerasFileError(UserError):
    """A Keras model file that is missing, unreadable, or does not fit the network it is imported into."""


class KerasUnavailableError(UserError):
    """Writing a Keras file needs the ``keras`` package, which is not installed (or has no usable backend)."""


# --- the mapping ----------------------------------------------------------------------------------------------------


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


# --- the PyTorch side -----------------------------------------------------------------------------------------------


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
            pending_flatten = tuple(flatten_inputs[name])
        elif isinstance(module, nn.Conv2d):
            result.append(WeightedLayer(name, module))
        elif isinstance(module, nn.Linear):
            result.append(WeightedLayer(name, module, pending_flatten))
            pending_flatten = None
    return result


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _torch_padding(module: nn.Conv2d | nn.MaxPool2d) -> str:
    """``valid`` or ``same`` in Keras' words, for a layer's PyTorch padding."""
    padding = module.padding
    if isinstance(padding, str):
        return padding
    if _pair(padding) == (0, 0):
        return "valid"
    kernel, stride = _pair(module.kernel_size), _pair(module.stride)
    if stride == (1, 1) and all(k % 2 == 1 and p == k // 2 for k, p in zip(kernel, _pair(padding), strict=True)):
        return "same"
    return f"padding {_pair(padding)}"


def _conv_op(kernel: Any, strides: Any, padding: str, dilation: Any = 1, groups: int = 1) -> str:
    (kh, kw), (sh, sw) = _pair(kernel), _pair(strides)
    text = f"Conv2D {kh}x{kw} stride {sh}x{sw} {padding}"
    if _pair(dilation) != (1, 1):
        text += f" dilation {_pair(dilation)}"
    return text + (f" groups {groups}" if groups != 1 else "")


def _pool_op(pool: Any, strides: Any, padding: str) -> str:
    (ph, pw), (sh, sw) = _pair(pool), _pair(strides)
    return f"MaxPooling2D {ph}x{pw} stride {sh}x{sw} {padding}"


def torch_ops(net: nn.Module) -> list[str]:
    """What the network computes at inference, layer by layer, in the words :func:`keras_ops` uses.

    Dropout does nothing at inference and is left out; the network ends in logits (``predict`` applies softmax).
    """
    ops = []
    for _, m in network_layers(net):
        if isinstance(m, nn.Conv2d):
            ops.append(_conv_op(m.kernel_size, m.stride, _torch_padding(m), m.dilation, m.groups))
        elif isinstance(m, nn.MaxPool2d):
            padding = _torch_padding(m) + (" ceil" if m.ceil_mode else "")
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


# --- the Keras side -------------------------------------------------------------------------------------------------


@dataclass
class KerasLayer:
    """A layer with weights, as read from a Keras file: its name there, its class (when the file says), its arrays."""

    name: str
    class_name: str | None
    arrays: list[np.ndarray]

    @property
    def kind(self) -> str:
        """``conv``, ``dense``, or the class name of another layer; from the kernel's rank when the class is unknown."""
        if self.class_name is not None:
            kinds = {cls: kind for kind, cls in KERAS_CLASSES.items()}
            return kinds.get(self.class_name, self.class_name)
        return {4: "conv", 2: "dense"}.get(self.arrays[0].ndim, f"{self.arrays[0].ndim}-d weights")

    def describe(self) -> str:
        return f"'{self.name}' ({self.class_name or KERAS_CLASSES.get(self.kind, self.kind)})"


@dataclass
class KerasModelFile:
    """What a Keras file holds: its weighted layers in model order, and its saved architecture when it has one.

    Attributes:
        path: the file.
        format: what kind of Keras file it is, in words.
        layers: the layers that hold weights, in the model's order.
        config_layers: the saved architecture, each layer as ``{"class_name": ..., "config": {...}}``, in order;
            None for weights-only files.
        keras_version: the Keras version that wrote it, when the file records it.
    """

    path: Path
    format: str
    layers: list[KerasLayer]
    config_layers: list[dict[str, Any]] | None = None
    keras_version: str | None = None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _config_layers(model_config: Any, origin: str) -> list[dict[str, Any]]:
    """The layer list of a saved Sequential or Functional model config (Keras 2 or 3)."""
    inner = model_config.get("config") if isinstance(model_config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    if not isinstance(layers, list) or not all(isinstance(layer, dict) and "class_name" in layer for layer in layers):
        raise KerasFileError(f"{origin}: its saved model config has no list of layers; is it a Keras model?")
    return [{"class_name": layer["class_name"], "config": layer.get("config") or {}} for layer in layers]


def keras_save_names(class_names: list[str]) -> list[str]:
    """The group names Keras 3 gives layers in weight files: the class name in snake case, numbered per class
    (``conv2d``, ``conv2d_1``, ...), whatever the layers' own names."""
    used: dict[str, int] = {}
    names = []
    for class_name in class_names:
        snake = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)).lower()
        used[snake] = used.get(snake, -1) + 1
        names.append(snake if used[snake] == 0 else f"{snake}_{used[snake]}")
    return names


def _split_save_name(name: str) -> tuple[str, int]:
    base, number = re.fullmatch(r"(.*?)(?:_(\d+))?", name).groups()
    return base, int(number or 0)


def _read_keras3_weights(h5: Any, origin: str, config_layers: list[dict[str, Any]] | None) -> list[KerasLayer]:
    """The weighted layers of a Keras 3 weights file (``layers/<name>/vars/<i>``), in model order.

    With a config, the order is the config's. A ``.weights.h5`` alone records no order; its layers are then taken as
    all convolutions in their numbering, then all dense layers: the only order a Conv -> Flatten -> Dense stack has.
    """
    root = next((h5[key] for key in ("layers", "_layer_checkpoint_dependencies") if key in h5), None)
    if root is None:
        raise KerasFileError(f"{origin}: an HDF5 file without Keras weights (no model_weights or layers group).")
    found: dict[str, list[np.ndarray]] = {}
    for name, group in root.items():
        variables = group.get("vars")
        if variables is not None and len(variables):
            found[name] = [np.asarray(variables[key]) for key in sorted(variables, key=int)]
    if config_layers is not None:
        saved = [layer for layer in config_layers if layer["class_name"] != "InputLayer"]
        names = keras_save_names([layer["class_name"] for layer in saved])
        if set(found) <= set(names):
            return [
                KerasLayer(name, layer["class_name"], found[name])
                for name, layer in zip(names, saved, strict=True)
                if name in found
            ]
    rank = {"conv2d": 0, "dense": 1}

    def order(name: str) -> tuple[int, str, int]:
        base, number = _split_save_name(name)
        return rank.get(base, 2), base, number

    return [
        KerasLayer(name, SAVE_NAME_CLASSES.get(base, base), found[name])
        for name, base in ((name, _split_save_name(name)[0]) for name in sorted(found, key=order))
    ]


def _read_legacy_weights(group: Any, config_layers: list[dict[str, Any]] | None) -> list[KerasLayer]:
    """The weighted layers of a legacy HDF5 file, in the order of its ``layer_names`` attribute."""
    classes = {_text(layer["config"].get("name")): layer["class_name"] for layer in config_layers or []}
    layers = []
    for name in (_text(n) for n in group.attrs["layer_names"]):
        weight_names = [_text(n) for n in group[name].attrs.get("weight_names", [])]
        if weight_names:
            layers.append(KerasLayer(name, classes.get(name), [np.asarray(group[name][w]) for w in weight_names]))
    return layers


def read_keras_file(path: str | Path) -> KerasModelFile:
    """Read a Keras 3 ``.keras``, a legacy full-model ``.h5`` or a ``.weights.h5`` with h5py (no Keras, no TF).

    The format is recognized by content, not by name. Raises :class:`KerasFileError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise KerasFileError(f"{path}: no such file.")
    try:
        import h5py
    except ImportError as err:
        raise KerasFileError(
            "reading Keras files needs h5py: pip install h5py (or pip install -e '.[keras]')."
        ) from err
    if zipfile.is_zipfile(path):
        return _read_keras_zip(path, h5py)
    if not h5py.is_hdf5(path):
        raise KerasFileError(
            f"{path}: neither an HDF5 file (.h5, .weights.h5) nor a zip (.keras); not a Keras model file."
        )
    try:
        with h5py.File(path, "r") as h5:
            if "model_weights" in h5:
                config = json.loads(_text(h5.attrs["model_config"])) if "model_config" in h5.attrs else None
                config_layers = _config_layers(config, str(path)) if config is not None else None
                version = h5.attrs.get("keras_version", h5["model_weights"].attrs.get("keras_version"))
                layers = _read_legacy_weights(h5["model_weights"], config_layers)
                kind = "a legacy HDF5 full model" if config_layers else "a legacy HDF5 weights file"
                return KerasModelFile(path, kind, layers, config_layers, _text(version) if version else None)
            if "layer_names" in h5.attrs:
                version = h5.attrs.get("keras_version")
                return KerasModelFile(
                    path, "a legacy HDF5 weights file", _read_legacy_weights(h5, None), None,
                    _text(version) if version else None,
                )  # fmt: skip
            return KerasModelFile(path, "a Keras 3 .weights.h5 file", _read_keras3_weights(h5, str(path), None))
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as err:
        raise KerasFileError(
            f"{path}: a damaged or unsupported Keras HDF5 file ({type(err).__name__}: {err})."
        ) from err


def _read_keras_zip(path: Path, h5py: Any) -> KerasModelFile:
    """A Keras 3 ``.keras`` zip: ``config.json`` (the architecture) and ``model.weights.h5``."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            missing = {"config.json", "model.weights.h5"} - members
            if missing:
                raise KerasFileError(
                    f"{path}: a zip file but not a Keras model: it has no {' or '.join(sorted(missing))}."
                )
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in members else {}
            weights = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError) as err:
        raise KerasFileError(f"{path}: a damaged .keras file ({type(err).__name__}: {err}).") from err
    config_layers = _config_layers(config, str(path))
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            layers = _read_keras3_weights(h5, f"{path} (model.weights.h5)", config_layers)
    except (OSError, KeyError, ValueError) as err:
        raise KerasFileError(f"{path}: its model.weights.h5 is damaged ({type(err).__name__}: {err}).") from err
    return KerasModelFile(path, "a Keras 3 .keras model", layers, config_layers, metadata.get("keras_version"))


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
        name = _text(cfg.get("name", cls))
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


# --- checks and conversions -----------------------------------------------------------------------------------------


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
        weight = layer.module.weight.detach().double().cpu()
        bias = layer.module.bias.detach().double().cpu()
        if index == 0 and normalization == "standardize":
            if layer.kind != "conv" or _torch_padding(layer.module) != "valid":
                raise UserError("a standardized network can be exported to Keras only if it starts with a valid conv.")
            bias = bias - (MNIST_MEAN / MNIST_STD) * weight.sum(dim=(1, 2, 3))
            weight = weight / MNIST_STD
        weight_np, bias_np = weight.float().numpy(), bias.float().numpy()
        if layer.kind == "conv":
            result.append([conv_kernel_to_keras(weight_np), bias_np])
        else:
            result.append([dense_kernel_to_keras(weight_np, layer.flatten_chw), bias_np])
    return result


# --- writing, through Keras -----------------------------------------------------------------------------------------


def import_keras_package() -> Any:
    """The ``keras`` module, or a :class:`KerasUnavailableError` saying how to install it.

    Keras reads its backend from ``KERAS_BACKEND`` or ``~/.keras/keras.json`` when first imported; where neither is
    set for this process, PyTorch is taken (it is installed, and the files Keras writes do not depend on it).
    """
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as err:
        raise KerasUnavailableError(
            f"writing Keras files needs the keras package (and a backend for it): pip install keras ({err})."
        ) from err
    return keras


def build_keras_model(net: nn.Module, keras: Any, hparams: dict[str, Any] | None = None) -> Any:
    """The notebook-style Keras ``Sequential`` equivalent to ``net``, weights not set; compiled as the notebooks
    compiled theirs (Adam with the network's settings, categorical cross-entropy, accuracy).

    Conv2d or Linear followed by ReLU becomes one layer with ``activation="relu"``, as the notebooks wrote them; the
    last Linear gets ``activation="softmax"``.
    """
    layers = keras.layers
    modules = [module for _, module in network_layers(net)]
    last_linear = max(i for i, m in enumerate(modules) if isinstance(m, nn.Linear))
    stack: list[Any] = [keras.Input((IMAGE_SIDE, IMAGE_SIDE, 1))]
    index = 0
    while index < len(modules):
        m = modules[index]
        fuse = index + 1 < len(modules) and isinstance(modules[index + 1], nn.ReLU)
        activation = "relu" if fuse else None
        if isinstance(m, nn.Conv2d) and _torch_padding(m) == "valid" and m.groups == 1 and _pair(m.dilation) == (1, 1):
            stack.append(
                layers.Conv2D(m.out_channels, m.kernel_size, strides=m.stride, padding="valid", activation=activation)
            )
        elif isinstance(m, nn.MaxPool2d) and _torch_padding(m) == "valid" and not m.ceil_mode:
            stack.append(layers.MaxPooling2D(pool_size=m.kernel_size, strides=m.stride or m.kernel_size))
        elif isinstance(m, nn.Dropout):
            stack.append(layers.Dropout(m.p))
        elif isinstance(m, nn.Flatten):
            stack.append(layers.Flatten())
        elif isinstance(m, nn.Linear):
            stack.append(layers.Dense(m.out_features, activation="softmax" if index == last_linear else activation))
        elif isinstance(m, nn.ReLU):
            stack.append(layers.Activation("relu"))
        else:
            raise UserError(f"no Keras equivalent is known for the network's layer {m}.")
        index += 2 if fuse and not isinstance(m, nn.ReLU) else 1
    model = keras.Sequential(stack)
    hp = hparams or {}
    betas = hp.get("betas", (0.9, 0.999))
    optimizer = keras.optimizers.Adam(
        learning_rate=hp.get("lr", 1e-3), beta_1=betas[0], beta_2=betas[1], epsilon=hp.get("eps", 1e-7)
    )
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def keras_model_for(net: nn.Module, normalization: Normalization, hparams: dict[str, Any] | None = None) -> Any:
    """A Keras model that predicts what ``net`` predicts, from pixels / 255, channels last (N x 28 x 28 x 1)."""
    keras = import_keras_package()
    model = build_keras_model(net, keras, hparams)
    weighted = [layer for layer in model.layers if layer.weights]
    for layer, arrays in zip(weighted, network_to_keras_weights(net, normalization), strict=True):
        layer.set_weights(arrays)
    return model
