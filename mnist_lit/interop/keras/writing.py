"""Keras models written through the ``keras`` package itself (an optional dependency), on whatever backend it runs
(PyTorch where none is configured), and saved so that Keras on any backend loads them.

Both Keras file formats are Keras' own serializations: ``config.json`` has changed fields between Keras 3 releases,
and ``.weights.h5`` paths follow Keras' internal naming of saveables, so a file written by hand with h5py would be
right only for the Keras version it was copied from. Keras writing its own files is right for the Keras the user has.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from mnist_lit.data.datamodule import Normalization
from mnist_lit.data.idx import IMAGE_SIDE
from mnist_lit.errors import UserError
from mnist_lit.interop.keras.mapping import network_to_keras_weights
from mnist_lit.interop.keras.network import network_layers, pair, torch_padding

#: Where Keras keeps its backends' own classes; a saved file that names one loads only on that backend.
BACKEND_MODULES = "keras.src.backend."


class KerasUnavailableError(UserError):
    """Writing a Keras file needs the ``keras`` package, which is not installed (or has no usable backend)."""


class KerasBackendError(UserError):
    """A written ``.keras`` file names a class of the Keras backend that wrote it, so other backends cannot load it."""


def import_keras_package() -> Any:
    """The ``keras`` module, or a :class:`KerasUnavailableError` saying how to install it.

    Keras reads its backend when first imported; where ``KERAS_BACKEND`` is not set for this process, PyTorch is
    taken (it is installed, whatever ``~/.keras/keras.json`` names), and the files written load on every backend.
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
        if isinstance(m, nn.Conv2d) and torch_padding(m) == "valid" and m.groups == 1 and pair(m.dilation) == (1, 1):
            stack.append(
                layers.Conv2D(m.out_channels, m.kernel_size, strides=m.stride, padding="valid", activation=activation)
            )
        elif isinstance(m, nn.MaxPool2d) and torch_padding(m) == "valid" and not m.ceil_mode:
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
    beta_1, beta_2 = hp.get("betas", (0.9, 0.999))
    optimizer = keras.optimizers.Adam(
        learning_rate=hp.get("lr", 1e-3), beta_1=beta_1, beta_2=beta_2, epsilon=hp.get("eps", 1e-7)
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


def save_keras_model(model: Any, path: Path) -> None:
    """Save a compiled model as a ``.keras`` file that Keras on any backend loads, and refuse one that would not.

    The optimizer's variables (zeros) are built first and saved with the model, so that Keras, which builds the
    optimizer of a compiled model it loads, finds all of them and warns of none. Its class is then named as Keras
    exports it (see :func:`name_public_optimizer`).
    """
    model.optimizer.build(model.trainable_variables)
    model.save(path)
    name_public_optimizer(path, public_class(model.optimizer, import_keras_package().optimizers))
    names = backend_names(path)
    if names:
        keras = import_keras_package()
        raise KerasBackendError(
            f"the .keras file that Keras {keras.__version__} on its {keras.backend.backend()} backend wrote names "
            f"that backend's own {', '.join(sorted(set(names)))}, which Keras on other backends cannot import; "
            "nothing was written."
        )


def public_class(obj: Any, namespace: Any) -> type:
    """The class of ``obj`` as the public Keras ``namespace`` (``keras.optimizers``) exports it: its own, or the
    nearest base class that is."""
    for cls in type(obj).__mro__:
        if getattr(namespace, cls.__name__, None) is cls:
            return cls
    raise KerasBackendError(f"Keras exports no class of {type(obj).__qualname__} in {namespace.__name__}.")


def name_public_optimizer(path: Path, optimizer: type) -> None:
    """Name the public optimizer class in a saved ``.keras`` file's compile config, where Keras named its backend's.

    On the PyTorch backend, ``keras.optimizers.Adam(...)`` is an instance of that backend's own subclass
    (``TorchOptimizer.__new__`` swaps in ``keras.src.backend.torch.optimizers.torch_adam.Adam``, which updates all
    variables in one fused step), and Keras saves an object under its class's module, which only Keras on PyTorch
    can import. The subclass adds no setting and no variable: the same config and variables, under the public name
    that Keras on TensorFlow or JAX writes (``keras.optimizers``), load on every backend, each building its own
    class from it. A file that names no backend class is left as it is.
    """
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    config = json.loads(next(data for info, data in members if info.filename == "config.json"))
    entry = (config.get("compile_config") or {}).get("optimizer")
    if not (isinstance(entry, dict) and str(entry.get("module", "")).startswith(BACKEND_MODULES)):
        return
    entry.update(module="keras.optimizers", class_name=optimizer.__name__, registered_name=None)
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            archive.writestr(info, json.dumps(config).encode() if info.filename == "config.json" else data)


def backend_names(path: Path) -> list[str]:
    """The strings in a ``.keras`` file's ``config.json`` and ``metadata.json`` that name a module of one Keras
    backend (:data:`BACKEND_MODULES`)."""
    with zipfile.ZipFile(path) as archive:
        documents = [json.loads(archive.read(name)) for name in ("config.json", "metadata.json")]
    return [text for text in _strings(documents) if BACKEND_MODULES in text]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
