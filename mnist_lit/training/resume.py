"""Continuing an interrupted ``fit``: finding its ``last.ckpt``, checking that it fits the config, and its run folder.

Lightning restores the weights, optimizer and scheduler, the loops' counters and every callback's state from a
checkpoint; the data module shuffles each epoch from the seed and the epoch number alone, and the network saves the
random state the next epoch starts from. What is left for the command line is here: ``--ckpt_path last``, refusing a
checkpoint made with another configuration before anything is written, and writing into the interrupted run's own
folder rather than a new ``version_N``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from mnist_lit.errors import CheckpointError
from mnist_lit.training.checkpoints import class_path_of, resolve_class

#: The file every ``fit`` keeps in ``<run folder>/checkpoints/``, rewritten at each epoch's end.
LAST = "last.ckpt"
#: Data options that change what a run trains on, or in which order; the others (where the files are, the
#: evaluation batch size, prediction inputs, the device the splits live on) may differ when resuming.
DATA_OPTIONS_THAT_MATTER = ("batch_size", "val_split", "val_fraction", "normalization", "seed", "augment")


@dataclass(frozen=True)
class RunFolder:
    """A logger's run folder ``<save_dir>/<name>/<version>``."""

    save_dir: Path
    name: str
    version: str

    @property
    def path(self) -> Path:
        return self.save_dir / self.name / self.version


def latest_last_checkpoint(save_dir: str | Path, name: str) -> Path:
    """``--ckpt_path last``: the ``last.ckpt`` of the newest ``version_N`` under ``save_dir/name`` that has one."""
    root = Path(save_dir) / name
    versions = [p for p in root.glob("version_*") if p.name.removeprefix("version_").isdigit()]
    for run in sorted(versions, key=lambda p: int(p.name.removeprefix("version_")), reverse=True):
        if (run / "checkpoints" / LAST).is_file():
            return run / "checkpoints" / LAST
    raise CheckpointError(
        f"--ckpt_path last: no run under {root} has checkpoints/{LAST} to continue from. Give the checkpoint's path, "
        "or start a new run without --ckpt_path."
    )


def run_folder_of(ckpt_path: str | Path) -> RunFolder | None:
    """The run folder a checkpoint sits in (``<save_dir>/<name>/version_N/checkpoints/x.ckpt``), else None."""
    path = Path(ckpt_path).resolve()
    run = path.parent.parent
    if path.parent.name != "checkpoints" or not run.name.startswith("version_"):
        return None
    return RunFolder(save_dir=run.parent.parent, name=run.parent.name, version=run.name)


def check_resumable(
    ckpt_path: str | Path, checkpoint: Mapping[str, Any], model_config: Any, data_config: Mapping[str, Any]
) -> None:
    """Refuse, naming each difference, a checkpoint whose network or data options differ from the config's.

    Resuming such a checkpoint would either fail half-way (other layer sizes) or silently continue another
    experiment (another batch size, split or seed). ``checkpoint`` is the contents of the file at ``ckpt_path``.
    """
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise CheckpointError(
            f"--ckpt_path {ckpt_path}: it holds weights only (no optimizer or loop state), so `fit` cannot continue "
            "from it. To start a new run from these weights, use --init_weights instead."
        )
    differences = []
    saved_class, configured_class = class_path_of(checkpoint), getattr(model_config, "class_path", None)
    if saved_class and configured_class and resolve_class(saved_class) != resolve_class(configured_class):
        differences.append(f"model.class_path: the checkpoint has {saved_class}, the config {configured_class}")
    saved_model = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if not k.startswith("_")}
    configured_model = dict(getattr(model_config, "init_args", None) or {})
    for key in sorted(saved_model.keys() & configured_model.keys()):
        if _normal(saved_model[key]) != _normal(configured_model[key]):
            differences.append(
                f"model.init_args.{key}: the checkpoint has {saved_model[key]!r}, the config {configured_model[key]!r}"
            )
    saved_data = checkpoint.get("datamodule_hyper_parameters", {})
    for key in DATA_OPTIONS_THAT_MATTER:
        if key in saved_data and key in data_config and _normal(saved_data[key]) != _normal(data_config[key]):
            differences.append(f"data.{key}: the checkpoint has {saved_data[key]!r}, the config {data_config[key]!r}")
    if differences:
        raise CheckpointError(
            f"--ckpt_path {ckpt_path} was made with another configuration, so the run cannot continue from it: "
            + "; ".join(differences)
            + ". Use the run's own config.yaml (beside checkpoints/), or --init_weights to start a new run from its "
            "weights."
        )


def _normal(value: Any) -> Any:
    """Values as plain data, so that one setting compares equal however it is held: lists and tuples alike (YAML
    gives lists where Python code gives tuples), and a checkpoint's dict beside the config's Namespace or dataclass
    of the same fields (``data.augment``)."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {k: _normal(v) for k, v in value.items()}
    return [_normal(v) for v in value] if isinstance(value, (list, tuple)) else value
