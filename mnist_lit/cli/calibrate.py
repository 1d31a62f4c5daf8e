"""``python -m mnist_lit calibrate``: temperature scaling and the "not sure" threshold for an existing checkpoint.

The checkpoint's own data settings (saved by ``fit``) rebuild its validation split; the temperature and threshold
are fitted there (:mod:`mnist_lit.training.calibrate`) and written into a new checkpoint. The test set is then
evaluated before and after, for the record only: nothing is fitted on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mnist_lit.cli.preflight import check_mnist_folder
from mnist_lit.cli.writable import check_writable_file
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.errors import UserError
from mnist_lit.models.ood import OOD_METHODS
from mnist_lit.reporting.calibration import DEFAULT_KEEP, selective_summary, top_label
from mnist_lit.reporting.ood import DEFAULT_OOD_KEEP
from mnist_lit.training.calibrate import calibrate, check_calibratable, nll_and_calibration, split_logits
from mnist_lit.training.checkpoints import network_from_checkpoint, read_checkpoint
from mnist_lit.training.ood import NOTHING_TRANSFORMED, check_ood_fittable, fit_ood
from mnist_lit.utils.io import atomic_torch_save, atomic_write_json

PROG = "python -m mnist_lit calibrate"


def build_parser() -> argparse.ArgumentParser:
    """The command's options; abbreviations are off, as in the rest of the CLI."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description=(
            "Fit one temperature T on a checkpoint's validation split by minimising the validation NLL (Guo et al. "
            "2017: no prediction changes), choose the 'not sure' threshold there, and write both into a new "
            "checkpoint, which predict, classify, serve and export then use. Refused when the validation split is "
            "the test set."
        ),
        epilog=f"Example: {PROG} --ckpt_path lightning_logs/keras_report/version_0/checkpoints/last.ckpt",
    )
    parser.add_argument("--ckpt_path", required=True, metavar="PATH", help="the checkpoint (.ckpt) to calibrate")
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="where to write the calibrated checkpoint (default: <name>-calibrated.ckpt beside it; the same path as "
        "--ckpt_path replaces it)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--data_dir", metavar="DIR", help="the data folder (default: the one the checkpoint recorded)")
    parser.add_argument(
        "--keep",
        type=float,
        default=DEFAULT_KEEP,
        help=f"share of validation images the 'not sure' threshold still answers (default {DEFAULT_KEEP})",
    )
    parser.add_argument(
        "--ood",
        choices=(*OOD_METHODS, "none"),
        help="also fit this 'not a digit' score (statistics on the training images, threshold on the validation "
        "split), after the temperature (default: the checkpoint's own score if it has one fitted, else none, which "
        "drops one)",
    )
    parser.add_argument(
        "--ood_keep",
        type=float,
        default=DEFAULT_OOD_KEEP,
        help=f"share of validation digits the 'not a digit' threshold keeps as digits (default {DEFAULT_OOD_KEEP})",
    )
    parser.add_argument(
        "--ood_keep_transformed",
        action="store_true",
        help="keep that share of the validation digits as the checkpoint's data.augment and data.distort transform "
        "them in training, not as MNIST has them (as fit --ood.keep_transformed true; configs/robust.yaml)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the numbers (validation and test) to this file")
    return parser


def output_path(ckpt_path: Path, output: str | None, overwrite: bool) -> Path:
    """The file to write; never an existing file unless it was named explicitly and with ``--overwrite``, or is
    ``--ckpt_path`` itself named as ``--output``."""
    if output is None:
        target = ckpt_path.with_name(f"{ckpt_path.stem}-calibrated.ckpt")
        if target.exists():
            raise UserError(f"{target} exists: name another file with --output (or that one, with --overwrite).")
        return target
    target = Path(output)
    if target.is_dir() or not target.parent.is_dir():
        raise UserError(f"--output {target}: give a file name in a folder that exists.")
    same = target.exists() and target.resolve() == ckpt_path.resolve()
    if target.exists() and not (overwrite or same):
        raise UserError(f"--output {target}: the file exists; pass --overwrite to replace it.")
    return target


def datamodule_for(checkpoint: dict[str, Any], data_dir: str | None) -> MNISTDataModule:
    """The data module the checkpoint was trained with (its saved settings), reading from ``data_dir`` if given."""
    settings = {k: v for k, v in checkpoint.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    settings.pop("predict_path", None)
    settings["keep_on_device"] = False
    if data_dir is not None:
        settings["data_dir"] = data_dir
    datamodule = MNISTDataModule(**settings)
    datamodule.load_state_dict(checkpoint.get(MNISTDataModule.__qualname__, {}))
    return datamodule


def main(argv: list[str]) -> None:
    """Parse ``argv``, fit on the validation split, report validation and test, write the new checkpoint."""
    args = build_parser().parse_args(argv)
    if not 0.0 < args.keep <= 1.0:
        raise UserError(f"--keep {args.keep}: a share of the validation images, in (0, 1].")
    ckpt_path = Path(args.ckpt_path)
    target = output_path(ckpt_path, args.output, args.overwrite)  # the files it writes: checked before any work
    check_writable_file("--output" if args.output else "the calibrated checkpoint (--output)", target)
    if args.json and Path(args.json).exists() and not args.overwrite:
        raise UserError(f"--json {args.json}: the file exists; pass --overwrite to replace it, or name another.")
    if args.json:
        check_writable_file("--json", args.json)
    checkpoint = read_checkpoint(ckpt_path)
    datamodule = datamodule_for(checkpoint, args.data_dir)
    check_mnist_folder("--data_dir" if args.data_dir else "the checkpoint's data_dir (--data_dir)", datamodule.data_dir)
    check_calibratable(datamodule.hparams.val_split, option=f"calibrate --ckpt_path {ckpt_path}")
    trained = network_from_checkpoint(checkpoint, ckpt_path)
    # The softmax scores read the temperature, so a fitted score is fitted again after it, unless asked not to.
    ood_method = args.ood or (trained.model.ood.method_name if trained.model.ood.fitted else "none")
    if ood_method != "none":
        check_ood_fittable(
            datamodule.hparams.val_split, ood_method, option="--ood", keep=args.ood_keep, keep_option="--ood_keep"
        )
        if args.ood_keep_transformed and not datamodule.transforms_images:
            raise UserError(NOTHING_TRANSFORMED.format(option="--ood_keep_transformed"))
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = trained.model
    test_logits, test_labels = split_logits(model, datamodule, "test")
    test_before = nll_and_calibration(test_logits, test_labels, float(model.temperature))
    result = calibrate(model, datamodule, args.keep)
    test_after = nll_and_calibration(test_logits, test_labels, result.temperature)
    conf, correct = top_label((test_logits.double() / result.temperature).softmax(dim=1).numpy(), test_labels.numpy())
    selective = selective_summary(conf, correct, result.unsure_threshold)
    if ood_method == "none":
        ood = None
        model.ood.reset()  # a score fitted at another temperature no longer holds
    else:
        ood = fit_ood(model, datamodule, ood_method, args.ood_keep, transformed=args.ood_keep_transformed)
    record = {
        "source": str(ckpt_path),
        "val_split": datamodule.hparams.val_split,
        **result.as_dict(),
        "test_before": test_before,
        "test_after": test_after,
        "test_selective": selective,
        "ood": None if ood is None else ood.as_dict(),
    }
    for name, value in [*model.named_buffers()]:
        if name in ("temperature", "unsure_threshold") or name.startswith("ood."):
            checkpoint["state_dict"][name] = value.clone()
    checkpoint["calibration"] = record
    atomic_torch_save(target, checkpoint)
    if args.json:
        atomic_write_json(Path(args.json), record)
    print(result.summary())
    print(
        f"Test set ({len(test_labels)} images, not used to fit): NLL {test_before['nll']:.4f} -> "
        f"{test_after['nll']:.4f}, ECE {test_before['ece']:.4f} -> {test_after['ece']:.4f}, MCE "
        f"{test_before['mce']:.4f} -> {test_after['mce']:.4f}; not sure: {selective['unsure_fraction']:.2%}, error "
        f"rate of the rest {selective['error_rate_answered']:.3%} (of all: {selective['error_rate_all']:.3%})."
    )
    if ood is not None:
        print(ood.summary())
    print(f"Wrote {target}")
