"""``python -m mnist_lit import-keras MODEL --config C --output X.ckpt``: a Keras model of one of the notebooks'
networks turned into an ordinary checkpoint of the config's network, written whole or not at all."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mnist_lit.cli.conversion import PROG, ExportError, check_output, configured_network
from mnist_lit.utils.io import atomic_torch_save


def build_parser() -> argparse.ArgumentParser:
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


def main(argv: list[str]) -> None:
    """``python -m mnist_lit import-keras MODEL --config C --output X.ckpt [--overwrite]``."""
    from mnist_lit.interop.keras import check_architecture, keras_to_state_dict, read_keras_file

    args = build_parser().parse_args(argv)
    output = Path(args.output)
    if output.suffix != ".ckpt":
        raise ExportError(f"--output {output}: a checkpoint's name must end in .ckpt.")
    check_output(output, args.overwrite)
    source = read_keras_file(args.model)
    model, datamodule = configured_network(args.config)
    network = f"{type(model).__name__} (--config {' '.join(args.config)})"
    check_architecture(source, model.net, network)
    model.net.load_state_dict(keras_to_state_dict(source, model.net))
    atomic_torch_save(output, imported_checkpoint(model, datamodule, source))
    version = f", Keras {source.keras_version}" if source.keras_version else ""
    config = " ".join(f"--config {c}" for c in args.config)
    print(
        f"Imported {len(source.layers)} layers from {source.path} ({source.format}{version}) into "
        f"{type(model).__name__}. Wrote {output}\nEvaluate it: {PROG} test {config} --ckpt_path {output}\n"
        f"Train on from it: {PROG} fit {config} --init_weights {output}"
    )
