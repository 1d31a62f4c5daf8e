"""Reading a checkpoint outside a Trainer: which network it holds, its weights, and the normalization it trained with.

The commands that use a trained network without training it (``export``, ``serve``) start from here, so that every
one of them refuses a bad file with the same message.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.normalization import Normalization
from mnist_lit.errors import CheckpointError
from mnist_lit.models.base import MNISTClassifier
from mnist_lit.utils.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic for local files: a temporary file in the same folder, flushed to
    disk, then renamed over the old one.

    A process killed while writing (``kill -9``, a power cut) leaves the previous checkpoint whole and loadable.
    Lightning's own writer stages the file in the system's temporary folder and moves it, which is a copy, not a
    rename, when that folder is on another file system. Remote paths (``s3://`` and so on) go to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(Path(path), checkpoint)


def read_checkpoint(path: str | Path, option: str = "--ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents (on the CPU), or a :class:`CheckpointError` naming ``option`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{option} {path}: no such file. Runs keep theirs in lightning_logs/<name>/version_N/checkpoints/."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same to the user
        raise CheckpointError(f"{option} {path}: not a readable checkpoint ({type(err).__name__}: {err}).") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{option} {path}: not a Lightning checkpoint (it has no state_dict).")
    return checkpoint


def class_path_of(checkpoint: Mapping[str, Any]) -> str | None:
    """The dotted class path of the network a checkpoint holds, as LightningCLI recorded it."""
    return checkpoint.get("hyper_parameters", {}).get("_class_path")


def resolve_class(class_path: str) -> Any:
    """The class a dotted path names, so that two spellings of one class compare equal; else the path itself."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return class_path


def saved_normalization(checkpoint: Mapping[str, Any]) -> Normalization:
    """The data normalization the checkpoint's network was trained with (``unit`` when it recorded none)."""
    return checkpoint.get(MNISTDataModule.__qualname__, {}).get("normalization", "unit")


@dataclass
class TrainedNetwork:
    """A network loaded from a checkpoint, in eval mode on the CPU, with what a user of it must know.

    Attributes:
        model: the LightningModule, its weights loaded.
        normalization: how its training pixels were scaled (see :meth:`MNISTDataModule.normalize`).
        path: the checkpoint file.
    """

    model: MNISTClassifier
    normalization: Normalization
    path: Path

    @property
    def name(self) -> str:
        """The network's class name, for example ``KerasReportCNN``."""
        return type(self.model).__name__


def load_trained_network(path: str | Path, option: str = "--ckpt_path") -> TrainedNetwork:
    """Load the network a checkpoint holds, whatever its class, with no config: the checkpoint names it."""
    return network_from_checkpoint(read_checkpoint(path, option), path, option)


def network_from_checkpoint(
    checkpoint: Mapping[str, Any], path: str | Path, option: str = "--ckpt_path"
) -> TrainedNetwork:
    """:func:`load_trained_network` for a checkpoint already read (by :func:`read_checkpoint`), so that a command
    that also needs its other contents reads the file once."""
    class_path = class_path_of(checkpoint)
    cls = resolve_class(class_path) if class_path else None
    if not (isinstance(cls, type) and issubclass(cls, MNISTClassifier)):
        raise CheckpointError(
            f"{option} {path}: it does not name an mnist_lit network (class path {class_path!r}); checkpoints made "
            "by `python -m mnist_lit fit` or `import-keras` do."
        )
    init_args = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    try:
        model = cls(**init_args)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError) as err:
        raise CheckpointError(f"{option} {path}: its weights do not fit {cls.__name__} ({err}).") from err
    model.eval()
    return TrainedNetwork(model=model, normalization=saved_normalization(checkpoint), path=Path(path))
