"""The rules for ``--ckpt_path`` and ``--init_weights``: checked when the command line is parsed, before Lightning
reads a file (and would fail with a traceback, or report on random weights).

:func:`check_checkpoint` applies to every subcommand, :func:`prepare_resume` to ``fit --ckpt_path`` (with
:func:`~mnist_lit.training.resume.check_resumable`), :func:`load_weights` to ``fit --init_weights``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from mnist_lit.errors import CheckpointError
from mnist_lit.training.checkpoints import class_path_of, read_checkpoint, resolve_class
from mnist_lit.training.resume import check_resumable, latest_last_checkpoint, run_folder_of

#: ``ckpt_path`` values that Lightning resolves itself rather than as a file.
SPECIAL_CKPT_PATHS = {"best", "last", "hpc", "registry"}


def is_onnx(ckpt_path: Any) -> bool:
    """Whether ``--ckpt_path`` names an exported ONNX model rather than a checkpoint."""
    return str(ckpt_path or "").lower().endswith(".onnx")


def check_checkpoint(subcommand: str, ckpt_path: str | None, model_config: Namespace | None) -> dict[str, Any] | None:
    """Fail early, with a message, on a missing, unreadable or other-network checkpoint; return its contents when it
    is a local checkpoint file (None for no checkpoint, a remote one, an ONNX model, or one of Lightning's names).

    ``validate``, ``test`` and ``predict`` need one: without it they would report on random weights.
    """
    if not ckpt_path:
        if subcommand != "fit":
            raise CheckpointError(
                f"`{subcommand}` needs --ckpt_path: without a checkpoint the network has random weights. Runs keep "
                "theirs in lightning_logs/<name>/version_N/checkpoints/."
            )
        return None
    if "://" in str(ckpt_path):  # a remote checkpoint: Lightning reads it through fsspec
        return None
    if is_onnx(ckpt_path):  # an exported model: `predict` runs it in ONNX Runtime (see the CLI)
        if subcommand != "predict":
            raise CheckpointError(
                f"--ckpt_path {ckpt_path}: an ONNX model can `predict` only; `{subcommand}` needs a .ckpt checkpoint."
            )
        return None
    if str(ckpt_path) in SPECIAL_CKPT_PATHS:
        if subcommand != "fit":
            raise CheckpointError(
                f"--ckpt_path {ckpt_path} only means something after a `fit` in the same process; give a checkpoint "
                "file (lightning_logs/<name>/version_N/checkpoints/*.ckpt)."
            )
        return None
    checkpoint = read_checkpoint(ckpt_path)
    saved = class_path_of(checkpoint)
    configured = model_config.get("class_path") if model_config is not None else None
    if saved and configured and resolve_class(saved) != resolve_class(configured):
        raise CheckpointError(
            f"--ckpt_path {ckpt_path} holds a {saved.rsplit('.', 1)[-1]}, but the config selects "
            f"{configured.rsplit('.', 1)[-1]}. Use the config the checkpoint was trained with (the run folder keeps "
            "it as config.yaml), or set model.class_path to match."
        )
    return checkpoint


def prepare_resume(options: Namespace, checkpoint: dict[str, Any] | None) -> None:
    """``fit --ckpt_path``: resolve ``last``, refuse a checkpoint of another configuration, and point the logger at
    the checkpoint's own run folder, so that its curves, figures and ``metrics.json`` continue there. ``checkpoint``
    is its contents when :func:`check_checkpoint` has read them already."""
    logger = options.trainer.get("logger")
    logger_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if str(options.ckpt_path) == "last":
        if logger_args is None or logger_args.get("save_dir") is None:
            raise CheckpointError(
                "--ckpt_path last needs a logger with a save_dir and name (the notebook configs have one)."
            )
        options.ckpt_path = str(latest_last_checkpoint(logger_args.save_dir, logger_args.get("name") or ""))
        checkpoint = None
    if checkpoint is None:
        checkpoint = read_checkpoint(options.ckpt_path)
    check_resumable(options.ckpt_path, checkpoint, options.model, options.data)
    folder = run_folder_of(options.ckpt_path)
    if folder is not None and logger_args is not None and {"save_dir", "name", "version"} <= set(logger_args.keys()):
        # The configured save_dir, as written, when it is the checkpoint's own: ModelCheckpoint compares its folder
        # with the one the checkpoint recorded as strings, and on a mismatch (relative against absolute) forgets its
        # last.ckpt and writes last-v1.ckpt beside it, so that a second resume would start from the stale one.
        configured = logger_args.get("save_dir")
        same = configured is not None and Path(configured).resolve() == folder.save_dir
        logger_args.save_dir = str(configured if same else folder.save_dir)
        logger_args.name, logger_args.version = folder.name, folder.version


def load_weights(model: LightningModule, ckpt_path: str) -> None:
    """Copy a checkpoint's weights into ``model`` (it must be the same network), nothing else."""
    checkpoint = read_checkpoint(ckpt_path, option="--init_weights")
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(
            f"--init_weights {ckpt_path}: its weights do not fit the configured network ({err})."
        ) from err
    rank_zero_info(f"Started from the weights of {ckpt_path}.")
