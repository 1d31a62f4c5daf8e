"""The ``import-keras`` and ``export`` commands: arguments, checks, and output files written whole or not at all.

``python -m mnist_lit import-keras MODEL --config C --output X.ckpt`` turns a Keras model into an ordinary
checkpoint of the config's network. ``python -m mnist_lit export --ckpt_path X.ckpt --output F`` writes a
checkpoint as ONNX (``.onnx``), a Keras 3 model (``.keras``) or Keras weights (``.weights.h5``), and before it
reports success, runs the written file (ONNX Runtime, or Keras) on MNIST test images and compares its
probabilities with PyTorch's. Every failure is a :class:`~mnist_lit.errors.UserError` and leaves nothing at
``--output``.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import io
import logging
import os
import secrets
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnist_lit.cli.lightning_cli import build_cli
from mnist_lit.data.files import IMAGE_MAGIC, IMAGE_SIDE, IdxFileError, maybe_gunzip
from mnist_lit.errors import CheckpointError, UserError
from mnist_lit.inference.torch_runner import PixelClassifier
from mnist_lit.models.base import MNISTClassifier
from mnist_lit.training.checkpoints import TrainedNetwork, load_trained_network
from mnist_lit.utils.io import atomic_write_bytes

#: Output formats of ``export``, and the file-name ending each needs (Keras refuses to save under other names).
FORMATS = {"onnx": ".onnx", "keras": ".keras", "weights": ".weights.h5"}

#: The exported file's probabilities may differ from the checkpoint's by at most this much, for any image and digit.
TOLERANCE = 1e-5

#: How many MNIST test images (the first ones) the exported file is checked on.
VERIFY_IMAGES = 1000

PROG = "python -m mnist_lit"


class ExportError(UserError):
    """An ``export`` or ``import-keras`` that cannot be done as asked: a bad option, or a file that failed its check."""


# --- shared checks --------------------------------------------------------------------------------------------------


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an ``--output`` in a folder that does not exist, a folder, or an existing file without ``--overwrite``."""
    if not output.parent.is_dir():
        raise ExportError(f"--output {output}: the folder {output.parent} does not exist; create it first.")
    if output.is_dir():
        raise ExportError(f"--output {output}: is a folder; give a file name.")
    if output.exists() and not overwrite:
        raise ExportError(f"--output {output}: the file exists; pass --overwrite to replace it.")


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
    module = PixelClassifier.of(trained)
    with torch.inference_mode():
        return module(torch.from_numpy(images).float()).numpy()


def network_options(cls: type) -> set[str]:
    """The constructor arguments that shape a network class (not its training options)."""
    training = set(inspect.signature(MNISTClassifier.__init__).parameters)
    return {name for name in inspect.signature(cls.__init__).parameters if name not in training and name != "kwargs"}


def configured_network(configs: list[str]) -> tuple[Any, Any]:
    """The network and data module of ``--config`` files, as ``python -m mnist_lit fit --config ...`` builds them."""
    for config in configs:
        if not Path(config).is_file():
            raise ExportError(f"--config {config}: no such file.")
    args = [item for config in configs for item in ("--config", config)]
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # the Trainer's notes (GPU available, tips) are not about this command
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            cli = build_cli([*args, "--seed_everything", "false", "--trainer.logger", "false"], run=False)
    finally:
        lightning_log.setLevel(level)
    return cli.model, cli.datamodule


# --- import-keras ---------------------------------------------------------------------------------------------------


def _import_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} import-keras",
        allow_abbrev=False,
        description=(
            "Turn a Keras model of one of the notebooks' networks into a checkpoint of the config's network, which "
            "test, validate and predict take with --ckpt_path, and fit with --init_weights. Keras files are read with "
            "h5py (no TensorFlow, no Keras)."
        ),
        epilog=(
            "Layers are matched by order and checked by shape; for files with a saved architecture (.keras, full "
            ".h5) also activations, padding and pooling. Conv kernels go from (kh, kw, in, out) to (out, in, kh, kw), "
            "dense kernels are transposed, and the first dense layer after Flatten has its inputs re-ordered from "
            "Keras' (H, W, C) to PyTorch's (C, H, W)."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="a Keras 3 .keras file, a legacy full-model .h5, or .weights.h5")
    parser.add_argument(
        "--config", action="append", required=True, metavar="YAML",
        help="the config whose network the weights go into, e.g. configs/keras_report.yaml (repeatable; later wins)",
    )  # fmt: skip
    parser.add_argument("--output", required=True, metavar="PATH.ckpt", help="the checkpoint to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return parser


def imported_checkpoint(model: Any, datamodule: Any, source: Any) -> dict[str, Any]:
    """A weights-only checkpoint, as Lightning writes one (``save_weights_only``), of a network whose weights came
    from Keras: it names the class and its init arguments (so LightningCLI and
    :func:`~mnist_lit.training.checkpoints.load_trained_network` rebuild it) and records the notebooks' normalization
    (pixels / 255). It has no optimizer nor loop state: no training happened here, so ``fit`` starts a new run from
    it with ``--init_weights``, rather than continuing one with ``--ckpt_path``."""
    import lightning

    normalization = {"normalization": "unit"}
    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "hparams_name": "kwargs",
        "hyper_parameters": dict(model.hparams),
        "datamodule_hparams_name": "kwargs",
        "datamodule_hyper_parameters": {**dict(datamodule.hparams), **normalization},
        type(datamodule).__qualname__: normalization,
        "imported_from": {"file": str(source.path), "format": source.format, "keras_version": source.keras_version},
    }


def import_keras(argv: list[str]) -> None:
    """``python -m mnist_lit import-keras MODEL --config C --output X.ckpt [--overwrite]``."""
    from mnist_lit.interop.keras import check_architecture, keras_to_state_dict, read_keras_file

    args = _import_parser().parse_args(argv)
    output = Path(args.output)
    if output.suffix != ".ckpt":
        raise ExportError(f"--output {output}: a checkpoint's name must end in .ckpt.")
    check_output(output, args.overwrite)
    source = read_keras_file(args.model)
    model, datamodule = configured_network(args.config)
    network = f"{type(model).__name__} (--config {' '.join(args.config)})"
    check_architecture(source, model.net, network)
    model.net.load_state_dict(keras_to_state_dict(source, model.net))
    buffer = io.BytesIO()
    torch.save(imported_checkpoint(model, datamodule, source), buffer)
    atomic_write_bytes(output, buffer.getvalue())
    version = f", Keras {source.keras_version}" if source.keras_version else ""
    config = " ".join(f"--config {c}" for c in args.config)
    print(
        f"Imported {len(source.layers)} layers from {source.path} ({source.format}{version}) into "
        f"{type(model).__name__}. Wrote {output}\nEvaluate it: {PROG} test {config} --ckpt_path {output}\n"
        f"Train on from it: {PROG} fit {config} --init_weights {output}"
    )


# --- export ---------------------------------------------------------------------------------------------------------


def _export_parser() -> argparse.ArgumentParser:
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
            "dark; output 'probabilities', float32 (N, 10). The normalization is inside the graph. Keras files take "
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
    if requested is None and by_name is None:
        hint = " (legacy .h5 is not written: use .keras or .weights.h5)" if output.suffix == ".h5" else ""
        raise ExportError(
            f"--output {output}: unknown format{hint}; the name must end in .onnx, .keras or .weights.h5, or give "
            "--format."
        )
    if requested is not None and by_name is not None and requested != by_name:
        raise ExportError(f"--output {output} is a {by_name} file name, but --format says {requested}.")
    fmt = requested or by_name
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


def _write_onnx(trained: TrainedNetwork, path: Path, images: np.ndarray) -> np.ndarray:
    from mnist_lit.interop.onnx import OnnxRunner, export_onnx

    path.write_bytes(export_onnx(trained))
    return OnnxRunner(path).probabilities(images)


def _write_keras(trained: TrainedNetwork, path: Path, images: np.ndarray, fmt: str) -> np.ndarray:
    """Write the Keras file, then load it back with Keras as a user would, and return its probabilities."""
    from mnist_lit.interop.keras import build_keras_model, import_keras_package, keras_model_for

    hparams = dict(trained.model.hparams)
    net = temperature_folded(trained.model.net, float(trained.model.temperature))
    model = keras_model_for(net, trained.normalization, hparams)
    keras = import_keras_package()
    if fmt == "keras":
        # Built optimizer variables (zeros) are saved with the model, so that Keras, which builds the optimizer of
        # a compiled model it loads, finds all of them and warns of none.
        model.optimizer.build(model.trainable_variables)
        model.save(path)
        reloaded = keras.saving.load_model(path)
    else:
        model.save_weights(path)
        reloaded = build_keras_model(net, keras, hparams)
        reloaded.load_weights(path)
    x = images.astype(np.float32).transpose(0, 2, 3, 1) / 255.0
    return np.asarray(reloaded.predict(x, batch_size=500, verbose=0))


def temperature_folded(net: torch.nn.Module, temperature: float) -> torch.nn.Module:
    """``net`` with its final Linear layer's weights and bias divided by ``temperature`` (a copy; ``net`` itself when
    T is 1), so that a plain Keras Sequential, whose last Dense layer applies the softmax, gives the calibrated
    probabilities: softmax((W x + b) / T) = softmax((W / T) x + b / T), with no custom layer."""
    if temperature == 1.0:
        return net
    last = [m for m in net.modules() if any(True for _ in m.parameters(recurse=False))][-1]
    if not isinstance(last, torch.nn.Linear):
        raise ExportError(
            f"the checkpoint's temperature ({temperature:.4f}) can be folded into a final Linear layer only; this "
            f"network ends in {type(last).__name__}. Export to ONNX, which carries the temperature in its graph."
        )
    folded = copy.deepcopy(net)
    last = [m for m in folded.modules() if any(True for _ in m.parameters(recurse=False))][-1]
    with torch.no_grad():
        last.weight.div_(temperature)
        if last.bias is not None:
            last.bias.div_(temperature)
    return folded


def export(argv: list[str]) -> None:
    """``python -m mnist_lit export --ckpt_path X.ckpt --output F [--format ...] [--overwrite] [--config C]``."""
    args = _export_parser().parse_args(argv)
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
        found = _write_onnx(trained, tmp, images) if fmt == "onnx" else _write_keras(trained, tmp, images, fmt)
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
    print(
        f"Wrote {output} ({fmt}: {trained.name}, normalization {trained.normalization}). Checked with {runtime} on "
        f"{len(images)} {origin}: max |Δp| = {delta:.2g} against PyTorch, the same digit for {agree} of {len(images)}."
    )
