"""``python -m mnist_lit classify``: what a trained network reads in your digit images, printed at once.

``predict`` is LightningCLI's subcommand: a Trainer, a run folder, ``predictions.csv`` and a figure, and the seconds
it takes to import torch and Lightning first. This command does one thing, fast: it prepares the images as
``predict`` does (:func:`~mnist_lit.data.images.load_predict_inputs`) and prints the same table. With an exported
``.onnx`` file it never imports torch, so it answers in well under a second; a ``.ckpt`` loads PyTorch.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from mnist_lit.data.images import load_predict_inputs
from mnist_lit.errors import UserError
from mnist_lit.inference.runners import Runner, load_runner, predict_with_scores
from mnist_lit.reporting.explanations import METHODS, save_explanations
from mnist_lit.reporting.prediction_table import PredictionTable, short_name

PROG = "python -m mnist_lit classify"
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command's options; abbreviations are off, as in the rest of the CLI."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description=(
            "Print what a trained network reads in digit images: the digit (or 'not a digit', when the network's OOD "
            "score says so), its probability and the runners-up. The "
            "images are prepared as `predict` prepares them (grey levels, inverted when dark on light, the digit "
            "scaled and centred as MNIST's are)."
        ),
        epilog=(
            f"Example: {PROG} my_digits/ --ckpt_path model.onnx (an export: no torch, well under a second), or a "
            "checkpoint from `fit`. For a run folder with predictions.csv and a figure, use `predict`."
        ),
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders of them, or quoted glob patterns"
    )
    parser.add_argument(
        "--ckpt_path",
        required=True,
        metavar="PATH",
        help="the network: an exported ONNX file (.onnx) or a checkpoint (.ckpt, from `fit` or `import-keras`)",
    )
    parser.add_argument(
        "--invert",
        choices=("auto", "always", "never"),
        default="auto",
        help="make the digits light on dark as MNIST's: auto (when the background is the lighter), always, never",
    )
    parser.add_argument("--csv", action="store_true", help="print CSV (predict's predictions.csv columns) instead")
    parser.add_argument(
        "--unsure_threshold",
        type=float,
        metavar="P",
        help="mark answers whose top probability is under P as 'not sure' (default: the network's own, from "
        "`calibrate`; 0: never)",
    )
    parser.add_argument(
        "--explain",
        choices=METHODS,
        help="also save, per input, the image beside an attribution map (Captum) in --explain_dir; checkpoints only",
    )
    parser.add_argument(
        "--explain_dir",
        default="explanations",
        metavar="DIR",
        help="where --explain writes its figures (default: explanations/; existing files are never replaced)",
    )
    return parser


def main(argv: list[str]) -> None:
    """Parse ``argv``, read the inputs, load the network, print its predictions."""
    args = build_parser().parse_args(argv)
    if args.explain and Path(args.ckpt_path).suffix.lower() == ".onnx":
        raise UserError(
            f"--explain needs a checkpoint (.ckpt): attributions follow the network's gradients, and {args.ckpt_path} "
            "is an ONNX export, which has none. Give the checkpoint it was exported from."
        )
    names: list[str] = []
    images: list[np.ndarray] = []
    for spec in args.inputs:
        inputs = load_predict_inputs(spec, args.invert, option="INPUT")
        for name, reason in inputs.skipped:
            log.warning("Skipped %s: %s.", name, reason)
        names += inputs.names
        images.append(inputs.images)
    runner = load_runner(Path(args.ckpt_path))
    pixels = np.concatenate(images)[:, None]
    probabilities, scores = predict_with_scores(runner, pixels)
    threshold = runner.unsure_threshold if args.unsure_threshold is None else args.unsure_threshold
    table = PredictionTable(
        names, probabilities, unsure_threshold=threshold, ood_scores=scores,
        ood_threshold=getattr(runner, "ood_threshold", None), ood_method=getattr(runner, "ood_method", None),
    )  # fmt: skip
    print(table.to_csv() if args.csv else table.render(max_rows=len(names)), end="" if args.csv else "\n")
    if args.explain:
        explain(runner, pixels, table, args.explain, Path(args.explain_dir))


def explain(runner: Runner, pixels: np.ndarray, table: PredictionTable, method: str, folder: Path) -> None:
    """One figure per input in ``folder``: the image beside the attribution map of its answer."""
    maps = runner.explain(pixels, method)  # type: ignore[attr-defined]  # a TorchRunner: checked above
    titles = [f"{short_name(Path(n).name, 40)}: {table.answer(i)} (p = {table.confidence[i]:.3f})" for i, n in
              enumerate(table.names)]  # fmt: skip
    stems = [Path(name).name for name in table.names]
    written = save_explanations(folder, stems, pixels[:, 0], maps, titles, method)
    log.info("Wrote %d explanations (%s) to %s", len(written), method, folder)
