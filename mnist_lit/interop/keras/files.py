"""Keras model files read with h5py and the standard library only (never TensorFlow, nor Keras).

A Keras 3 ``.keras`` file is a zip holding ``config.json`` and ``model.weights.h5``; a legacy ``.h5`` (Keras 2 or 3
``model.save``) holds the model's config as an attribute and its weights under ``model_weights/<layer>``, in the
order of the attribute ``layer_names``; a Keras 3 ``.weights.h5`` holds ``layers/<class_name>[_N]/vars/<i>``, with no
config.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lit.errors import UserError

#: Keras class names of the layers that hold weights, and the names Keras 3 gives their groups in weight files.
KERAS_CLASSES: dict[str, str] = {"conv": "Conv2D", "dense": "Dense"}
SAVE_NAME_CLASSES = {"conv2d": "Conv2D", "dense": "Dense"}


class KerasFileError(UserError):
    """A Keras model file that is missing, unreadable, or does not fit the network it is imported into."""


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


def as_text(value: Any) -> str:
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
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    assert match is not None  # the pattern matches every string
    base, number = match.groups()
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
    classes = {as_text(layer["config"].get("name")): layer["class_name"] for layer in config_layers or []}
    layers = []
    for name in (as_text(n) for n in group.attrs["layer_names"]):
        weight_names = [as_text(n) for n in group[name].attrs.get("weight_names", [])]
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
                config = json.loads(as_text(h5.attrs["model_config"])) if "model_config" in h5.attrs else None
                config_layers = _config_layers(config, str(path)) if config is not None else None
                version = h5.attrs.get("keras_version", h5["model_weights"].attrs.get("keras_version"))
                layers = _read_legacy_weights(h5["model_weights"], config_layers)
                kind = "a legacy HDF5 full model" if config_layers else "a legacy HDF5 weights file"
                return KerasModelFile(path, kind, layers, config_layers, as_text(version) if version else None)
            if "layer_names" in h5.attrs:
                version = h5.attrs.get("keras_version")
                return KerasModelFile(
                    path, "a legacy HDF5 weights file", _read_legacy_weights(h5, None), None,
                    as_text(version) if version else None,
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
