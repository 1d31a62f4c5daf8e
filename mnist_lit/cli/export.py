"""``python -m mnist_lit export --ckpt_path X.ckpt --output F``: a checkpoint written as ONNX (``.onnx``), a Keras 3
model (``.keras``) or Keras weights (``.weights.h5``). Before it reports success, the command runs the written file
(ONNX Runtime, or Keras) on MNIST test images and compares its probabilities with PyTorch's. Every failure is a
:class:`~mnist_lit.errors.UserError` and leaves nothing at ``--output``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_lit.cli.conversion import PROG, ExportError, check_output, configured_network, network_options
from mnist_lit.data.idx import IMAGE_MAGIC, IMAGE_SIDE, IdxFileError, maybe_gunzip
from mnist_lit.errors import CheckpointError
from mnist_lit.inference.torch_runner import PixelClassifier
from mnist_lit.training.checkpoints import TrainedNetwork, load_trained_network

#: Output formats of ``export``, and the file-name ending each needs (Keras refuses to save under other names).
FORMATS = {"onnx": ".onnx", "keras": ".keras", "weights": ".weights.h5"}

#: The exported file's probabilities may differ from the checkpoint's by at most this much, for any image and digit.
TOLERANCE = 1e-5

#: How many MNIST test images (the first ones) the exported file is checked on.
VERIFY_IMAGES = 1000


@contextmanager
def staged(output: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``output``, with the same ending; moved onto ``output`` (one rename) if the
    block succeeds, deleted if it fails, so ``output`` is never half written nor replaced by a failed file.

    Writers that need a path (Keras, onnx) write there, and the file can be checked before it becomes ``output``.
    """
    ending = next((e for e in FORMATS.values() if output.name.endswith(e)), output.suffix)
    tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.part{ending}")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies, as for any new file
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def verification_images(data_dir: Path, count: int = VERIFY_IMAGES) -> tuple[np.ndarray, str]:
    """The first ``count`` MNIST test images (N x 1 x 28 x 28 uint8) from ``data_dir/MNIST/raw``, gzip or not, and
    where they came from; seeded synthetic digit-like images when the file is not there."""
    raw = data_dir / "MNIST" / "raw"
    for path in (raw / "t10k-images-idx3-ubyte", raw / "t10k-images-idx3-ubyte.gz"):
        if not path.is_file():
            continue
        try:
            data = maybe_gunzip(path.read_bytes(), str(path))
        except IdxFileError:
            continue
        if len(data) < 16:
            continue
        magic, n, rows, cols = struct.unpack(">IIII", data[:16])
        if magic == IMAGE_MAGIC and rows == cols == IMAGE_SIDE and len(data) >= 16 + n * IMAGE_SIDE**2:
            n = min(n, count)
            images = np.frombuffer(data, np.uint8, count=n * IMAGE_SIDE**2, offset=16)
            return images.reshape(n, 1, IMAGE_SIDE, IMAGE_SIDE).copy(), f"MNIST test images ({path})"
    rng = np.random.default_rng(0)
    strokes = rng.random((count, 1, IMAGE_SIDE, IMAGE_SIDE)) < 0.15
    images = (strokes * rng.integers(64, 256, strokes.shape)).astype(np.uint8)
    return images, f"synthetic images (no MNIST test images in {raw}; --data_dir sets the folder)"


def torch_probabilities(trained: TrainedNetwork, images: np.ndarray) -> np.ndarray:
    """The checkpoint's probabilities for raw-pixel images, as PyTorch computes them."""
    return torch_outputs(trained, images)[0]


def torch_outputs(trained: TrainedNetwork, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's probabilities and OOD scores for raw-pixel images, as PyTorch computes them."""
    module = PixelClassifier.of(trained)
    with torch.inference_mode():
        probabilities, scores = module.scored(torch.from_numpy(images).float())
    return probabilities.numpy(), scores.numpy()


def score_difference(found: np.ndarray, expected: np.ndarray) -> float:
    """The largest difference of two runs' OOD scores, relative to the score where it is above 1 (a Mahalanobis
    distance of a non-digit can be in the thousands, where float32 keeps 7 digits, not 5 decimals)."""
    return float((np.abs(found - expected) / np.maximum(1.0, np.abs(expected))).max())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} export",
        allow_abbrev=False,
        description=(
            "Write a checkpoint as an ONNX model (.onnx: raw pixels in, probabilities out, for ONNX Runtime), a "
            "Keras 3 model (.keras) or Keras weights for the notebook's Sequential model (.weights.h5). The "
            "written file is run on MNIST test images and must give the checkpoint's probabilities to "
            f"{TOLERANCE:g}, or the command fails and writes nothing."
        ),
        epilog=(
            "ONNX contract: input 'image', float32 (N, 1, 28, 28), N dynamic, raw pixel values 0-255, light digit on "
            "dark; outputs 'probabilities', float32 (N, 10), and 'ood_score', float32 (N,) (higher: less like a "
            "digit; metadata ood_method, ood_threshold). The normalization is inside the graph. Keras files take "
            "pixels / 255, channels last (N, 28, 28, 1), as the notebooks' models did."
        ),
    )
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint to export")
    parser.add_argument("--output", required=True, help="model.onnx, model.keras or model.weights.h5")
    parser.add_argument(
        "--format", choices=sorted(FORMATS), help="onnx, keras or weights; by default, from --output's ending"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument(
        "--config", action="append", metavar="YAML",
        help="optional: refuse the export unless the checkpoint holds this config's network (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--data_dir", default="data", type=Path,
        help="where MNIST's test images are (DATA_DIR/MNIST/raw) for the check (default: data; else synthetic)",
    )  # fmt: skip
    return parser


def output_format(output: Path, requested: str | None) -> str:
    """The format, from ``--format`` or else ``--output``'s ending; refuse an unknown ending, or a contradiction."""
    by_name = next((fmt for fmt in ("weights", "keras", "onnx") if output.name.endswith(FORMATS[fmt])), None)
    if requested is not None and by_name is not None and requested != by_name:
        raise ExportError(f"--output {output} is a {by_name} file name, but --format says {requested}.")
    fmt = requested or by_name
    if fmt is None:
        hint = " (legacy .h5 is not written: use .keras or .weights.h5)" if output.suffix == ".h5" else ""
        raise ExportError(
            f"--output {output}: unknown format{hint}; the name must end in .onnx, .keras or .weights.h5, or give "
            "--format."
        )
    if fmt != "onnx" and by_name is None:
        raise ExportError(f"--output {output}: Keras saves --format {fmt} only under a name ending in {FORMATS[fmt]}.")
    return fmt


def check_config_matches(configs: list[str], trained: TrainedNetwork, ckpt_path: str) -> None:
    """Refuse a checkpoint of another network, or of other layer sizes, than ``--config`` selects."""
    configured, _ = configured_network(configs)
    where = f"--config {' '.join(configs)}"
    if type(configured) is not type(trained.model):
        raise CheckpointError(
            f"--ckpt_path {ckpt_path} holds a {trained.name}, but {where} selects {type(configured).__name__}."
        )
    for name in sorted(network_options(type(configured))):
        ours, theirs = configured.hparams.get(name), trained.model.hparams.get(name)
        if _plain(ours) != _plain(theirs):
            raise CheckpointError(
                f"--ckpt_path {ckpt_path} holds a {trained.name} with {name}={_plain(theirs)}, but {where} sets "
                f"{name}={_plain(ours)}."
            )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _write_onnx(trained: TrainedNetwork, path: Path, images: np.ndarray, origin: str) -> np.ndarray:
    """Write the ONNX file, run it, check its OOD scores against the checkpoint's; return its probabilities."""
    from mnist_lit.interop.onnx import OnnxRunner, export_onnx

    path.write_bytes(export_onnx(trained))
    probabilities, scores = OnnxRunner(path).predict(images)
    delta = score_difference(scores, torch_outputs(trained, images)[1])
    if not delta <= TOLERANCE:
        raise ExportError(
            f"ONNX Runtime's OOD score ({trained.model.ood.method_name}) for the exported {trained.name} differs "
            f"from the checkpoint's by {delta:.3g} on {len(images)} {origin}, above the tolerance {TOLERANCE:g}. "
            "Nothing was written."
        )
    return probabilities


def _write_keras(trained: TrainedNetwork, path: Path, images: np.ndarray, fmt: str) -> np.ndarray:
    """Write the Keras file, then load it back with Keras as a user would, and return its probabilities."""
    from mnist_lit.interop.keras.mapping import fold_temperature
    from mnist_lit.interop.keras.writing import (
        build_keras_model,
        import_keras_package,
        keras_model_for,
        save_keras_model,
    )

    hparams = dict(trained.model.hparams)
    net = fold_temperature(trained.model.net, float(trained.model.temperature))
    model = keras_model_for(net, trained.normalization, hparams)
    keras = import_keras_package()
    if fmt == "keras":
        save_keras_model(model, path)
        reloaded = keras.saving.load_model(path)
    else:
        model.save_weights(path)
        reloaded = build_keras_model(net, keras, hparams)
        reloaded.load_weights(path)
    x = images.astype(np.float32).transpose(0, 2, 3, 1) / 255.0
    return np.asarray(reloaded.predict(x, batch_size=500, verbose=0))


def main(argv: list[str]) -> None:
    """``python -m mnist_lit export --ckpt_path X.ckpt --output F [--format ...] [--overwrite] [--config C]``."""
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    fmt = output_format(output, args.format)
    check_output(output, args.overwrite)
    trained = load_trained_network(args.ckpt_path)
    if args.config:
        check_config_matches(args.config, trained, args.ckpt_path)
    images, origin = verification_images(args.data_dir)
    expected = torch_probabilities(trained, images)
    runtime = "ONNX Runtime" if fmt == "onnx" else "Keras"
    with staged(output) as tmp:
        found = _write_onnx(trained, tmp, images, origin) if fmt == "onnx" else _write_keras(trained, tmp, images, fmt)
        delta = float(np.abs(found - expected).max())
        if not delta <= TOLERANCE:  # also catches NaN
            raise ExportError(
                f"{runtime} running the exported {trained.name} differs from the checkpoint {args.ckpt_path}: max "
                f"|Δp| = {delta:.3g} on {len(images)} {origin}, above the tolerance {TOLERANCE:g}. Nothing was "
                f"written to {output}."
            )
    agree = int((found.argmax(axis=1) == expected.argmax(axis=1)).sum())
    temperature = float(trained.model.temperature)
    if temperature != 1.0:
        inside = "a Div node in the graph" if fmt == "onnx" else "folded into the last Dense layer's weights and bias"
        print(f"The temperature T = {temperature:.4f} is {inside}; the probabilities are the calibrated ones.")
    ood = trained.model.ood
    if fmt == "onnx":
        verdict = f"'not a digit' above {float(ood.threshold):.4g}" if ood.fitted else "no 'not a digit' threshold"
        print(f"The OOD score ({ood.method_name}) is the output 'ood_score'; {verdict} (metadata ood_threshold).")
    elif ood.fitted:
        print(
            f"A Keras file cannot carry the OOD score ({ood.method_name}) nor its threshold "
            f"({float(ood.threshold):.4g}): see docs/keras.md for what to compute yourself."
        )
    print(
        f"Wrote {output} ({fmt}: {trained.name}, normalization {trained.normalization}). Checked with {runtime} on "
        f"{len(images)} {origin}: max |Δp| = {delta:.2g} against PyTorch, the same digit for {agree} of {len(images)}."
    )
