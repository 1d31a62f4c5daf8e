"""``export --output DIR/``: a checkpoint as one self-describing model folder, every file checked before it appears.

The folder (see :mod:`mnist_lit.inference.pretrained_network` for what each file holds) is written in a hidden
staging folder beside ``DIR``; each of its three networks (safetensors through ``from_pretrained``, ``model.pt2``
through ``torch.export.load``, ``model.onnx`` through ONNX Runtime) is loaded back from disk as a user would load it
and run on the same images at batch 1 and 257 and on all of them, against the checkpoint's probabilities, its OOD
scores (relative above 1, as the ONNX export's check) and its "not a digit" verdicts. Only when all agree is the
staging folder renamed to ``DIR`` (one rename); if anything fails it is deleted, so nothing is left at ``DIR``.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_lit.data.idx import IMAGE_SIDE
from mnist_lit.errors import UserError
from mnist_lit.inference.pretrained_network import (
    CARD,
    CHECKSUMS,
    ONNX,
    PROGRAM,
    PretrainedNetwork,
    network_from_trained,
    write_checksums,
)
from mnist_lit.inference.torch_runner import PixelClassifier
from mnist_lit.interop.model_card import write_card
from mnist_lit.models.base import MNISTClassifier
from mnist_lit.reporting.ood import score_difference, verdict_flips
from mnist_lit.training.checkpoints import TrainedNetwork

#: The batch sizes every file is checked at (a single image, and one that is not a power of two), besides all images.
CHECK_BATCHES = (1, 257)


class ModelFolderExportError(UserError):
    """A model folder that could not be written, or whose files do not give the checkpoint's answers."""


@dataclass
class FolderCheck:
    """Per file and batch size checked: the largest probability difference from the checkpoint, the largest OOD
    score difference (relative above 1), and how many "not a digit" verdicts differ."""

    deltas: dict[str, dict[int, float]] = field(default_factory=dict)
    score_deltas: dict[str, dict[int, float]] = field(default_factory=dict)
    flips: dict[str, dict[int, int]] = field(default_factory=dict)

    def worst(self) -> float:
        return max((d for per_file in self.deltas.values() for d in per_file.values()), default=0.0)

    def worst_score(self) -> float:
        return max((d for per_file in self.score_deltas.values() for d in per_file.values()), default=0.0)

    def flipped(self) -> int:
        return max((d for per_file in self.flips.values() for d in per_file.values()), default=0)

    def summary(self) -> str:
        return "; ".join(
            f"{name}: " + ", ".join(f"batch {b} {d:.2g}" for b, d in per_file.items())
            for name, per_file in self.deltas.items()
        )


def find_metrics(ckpt_path: Path) -> Path | None:
    """The ``metrics.json`` of the run a checkpoint belongs to (``version_N/checkpoints/x.ckpt``), if there is one."""
    candidates = [ckpt_path.parent / "metrics.json"]
    if ckpt_path.parent.name == "checkpoints":
        candidates.insert(0, ckpt_path.parent.parent / "metrics.json")
    return next((p for p in candidates if p.is_file()), None)


def read_metrics(path: Path | None) -> dict[str, Any] | None:
    """A ``metrics.json``, or None for no path; an unreadable file is an error naming it."""
    if path is None:
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelFolderExportError(f"--metrics {path}: not a readable metrics.json ({err}).") from err
    if not isinstance(metrics, dict):
        raise ModelFolderExportError(f"--metrics {path}: not a metrics.json written by a test run.")
    return metrics


class ScoredProgram(torch.nn.Module):
    """What ``model.pt2`` holds: :meth:`PretrainedNetwork.scored` as ``forward``, its OOD method fixed (a string, so
    that the graph holds the one score it names): raw pixels in, (probabilities, ood_score) out."""

    def __init__(self, network: PretrainedNetwork) -> None:
        super().__init__()
        self.network = network
        self.method = network.ood_method

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.scored(pixels, self.method)


def export_program(network: PretrainedNetwork, path: Path) -> None:
    """``torch.export`` of the network (raw pixels in; the probabilities and the OOD score out), the batch dimension
    dynamic."""
    example = torch.zeros(2, 1, IMAGE_SIDE, IMAGE_SIDE)
    try:
        program = torch.export.export(
            ScoredProgram(network).eval(), (example,), dynamic_shapes={"pixels": {0: torch.export.Dim("N")}}
        )
    except Exception as err:  # torch.export raises many types; each means this network cannot be exported as is
        raise ModelFolderExportError(
            f"torch.export failed for {network.network} ({type(err).__name__}: {err})."
        ) from err
    torch.export.save(program, path)


def check_program_pickle_free(path: Path) -> None:
    """Refuse a ``.pt2`` archive that stores any tensor pickled (``torch.export.load`` would unpickle it with
    the full pickle loader), or whose sample inputs need more than ``weights_only=True``."""
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if member.endswith("_config.json"):
                config = json.loads(archive.read(member))
                pickled = [k for k, v in config.get("config", {}).items() if v.get("use_pickle")]
                if pickled:
                    raise ModelFolderExportError(f"{path.name} stores {', '.join(pickled)} pickled; not written.")
            elif "/sample_inputs/" in member:
                torch.load(io.BytesIO(archive.read(member)), weights_only=True)


def check_folder(
    folder: Path,
    images: np.ndarray,
    expected: np.ndarray,
    expected_scores: np.ndarray,
    threshold: float | None,
    tolerance: float,
) -> FolderCheck:
    """Load each network of ``folder`` from disk and compare its probabilities with ``expected``, its OOD scores
    with ``expected_scores`` and its verdicts at ``threshold`` (those whose score is within ``tolerance`` of it
    left out: see :func:`~mnist_lit.reporting.ood.verdict_flips`)."""
    from mnist_lit.inference.onnx_runner import OnnxRunner

    reloaded = PretrainedNetwork.from_pretrained(folder)
    program = torch.export.load(folder / PROGRAM).module()
    onnx = OnnxRunner(folder / ONNX)

    def run_torch(module: Any) -> Any:
        def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                probabilities, scores = module(torch.from_numpy(x.astype(np.float32)))
            return probabilities.numpy(), scores.numpy()

        return run

    runners = {
        "model.safetensors": run_torch(ScoredProgram(reloaded)), PROGRAM: run_torch(program), ONNX: onnx.predict,
    }  # fmt: skip
    check = FolderCheck()
    for name, run in runners.items():
        deltas: dict[int, float] = {}
        score_deltas: dict[int, float] = {}
        flips: dict[int, int] = {}
        for batch in (*CHECK_BATCHES, len(images)):
            found, scores = run(images[:batch])
            size = min(batch, len(images))
            deltas[size] = float(np.abs(found - expected[:batch]).max())
            score_deltas[size] = score_difference(scores, expected_scores[:batch])
            flips[size] = verdict_flips(scores, expected_scores[:batch], threshold, tolerance)
        check.deltas[name], check.score_deltas[name], check.flips[name] = deltas, score_deltas, flips
    return check


def staging_folder(output: Path) -> Path:
    """A fresh hidden folder beside ``output``, on the same file system, so that the final move is one rename."""
    stage = output.with_name(f".{output.name}.{secrets.token_hex(4)}.part")
    stage.mkdir()
    return stage


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def write_model_folder(
    trained: TrainedNetwork,
    output: Path,
    images: np.ndarray,
    tolerance: float,
    metrics: dict[str, Any] | None,
    metrics_source: str,
) -> FolderCheck:
    """Write and check the model folder of ``trained`` at ``output``; on any failure nothing is left there.

    An existing ``output`` (the caller allowed replacing it) is moved aside, replaced, then deleted.
    """
    pixels = PixelClassifier.of(trained)
    with torch.inference_mode():
        probabilities, scores = pixels.scored(torch.from_numpy(images).float())
    expected, expected_scores = probabilities.numpy(), scores.numpy()
    stage = staging_folder(output)
    try:
        network = network_from_trained(trained)
        # The card first: save_pretrained writes a generic README.md only where there is none.
        write_card(stage / CARD, network, metrics, metrics_source, trained.path.name)
        network.save_pretrained(stage)
        from mnist_lit.interop.onnx import export_onnx

        (stage / ONNX).write_bytes(export_onnx(trained))
        export_program(network, stage / PROGRAM)
        check_program_pickle_free(stage / PROGRAM)
        write_checksums(stage)
        check = check_folder(
            stage, images.astype(np.float32), expected, expected_scores, pixels.ood_threshold, tolerance
        )
        if not check.worst() <= tolerance:  # also catches NaN
            raise ModelFolderExportError(
                f"the model folder's files differ from the checkpoint {trained.path} by more than {tolerance:g} "
                f"(max |Δp|: {check.summary()}). Nothing was written to {output}."
            )
        if not check.worst_score() <= tolerance or check.flipped():
            raise ModelFolderExportError(
                f"the model folder's OOD scores ({pixels.ood_method}) differ from the checkpoint {trained.path}'s by "
                f"{check.worst_score():.3g} (relative above 1; tolerance {tolerance:g}), with {check.flipped()} "
                f"'not a digit' verdicts changed. Nothing was written to {output}."
            )
        _fsync_folder(stage)
        if output.exists():
            aside = output.with_name(f".{output.name}.{secrets.token_hex(4)}.old")
            os.replace(output, aside)
            os.replace(stage, output)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(stage, output)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return check


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``export --output DIR/`` (which ``--overwrite`` may replace)."""
    return path.is_dir() and (path / CHECKSUMS).is_file() and (path / "config.json").is_file()


def load_folder_into(model: MNISTClassifier, folder: str | Path) -> str:
    """Load a model folder's weights and buffers into the configured LightningModule (``predict --ckpt_path DIR/``),
    after checking the folder against its SHA256SUMS; return the normalization its network was trained with."""
    from mnist_lit.errors import CheckpointError

    network = PretrainedNetwork.from_pretrained(folder)
    if network.network != type(model).__name__:
        raise CheckpointError(
            f"--ckpt_path {folder} holds a {network.network}, but the config selects {type(model).__name__}. Use the "
            "config of the network that was exported, or set model.class_path to match."
        )
    try:
        model.load_state_dict(network.state_dict(), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"--ckpt_path {folder}: its weights do not fit the configured network ({err}).") from err
    return str(network.preprocessing["normalization"]["name"])
