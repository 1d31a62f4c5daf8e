"""The options of ``python -m mnist_lit fit|validate|test|predict`` beyond LightningCLI's, and the checks made on
them as soon as they are parsed (before Lightning reads ``--ckpt_path`` and would fail with a traceback)."""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch.cli import LightningArgumentParser

from mnist_lit.callbacks.mlflow_tracking import MLflowTracking
from mnist_lit.cli.preflight import check_run_environment
from mnist_lit.errors import UserError
from mnist_lit.reporting.explanations import ExplainMethod
from mnist_lit.training.calibrate import check_calibratable
from mnist_lit.training.ckpt_path import check_checkpoint, is_onnx, prepare_resume
from mnist_lit.training.ood import check_ood_fittable

#: Our options beyond LightningCLI's: name -> (type, default, help).
OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "test_after_fit": (bool, True, "After `fit`, evaluate the final (restored-best, if so configured) weights on the "
                       "test set."),
    "init_weights": (str | None, None, "For `fit`: start a new run from this checkpoint's weights (fine-tuning); "
                     "unlike --ckpt_path, the optimizer, epochs and callbacks start afresh."),
    "calibrate": (bool, False, "For `fit`: after training, fit a temperature and the 'not sure' threshold on the "
                  "validation split (refused when it is the test set), save them in checkpoints/calibrated.ckpt, then "
                  "test with them."),
    "unsure_threshold": (float | None, None, "For `predict`: mark answers whose top probability is under this as "
                         "'not sure' (default: the checkpoint's own threshold, from `calibrate`; 0: never)."),
    "explain": (ExplainMethod | None, None, "For `predict`: also save, per input, the image beside an attribution "
                "map (Captum: ig = integrated gradients, saliency, gradcam) in figures/explanations/. Checkpoints "
                "only: ONNX has no gradients."),
    "mlflow": (MLflowTracking | None, None, "Log to MLflow too (configs/mlflow.yaml sets it): params, metrics, "
               "metrics.json, figures and the best checkpoint, to --mlflow.tracking_uri or mlruns/ beside "
               "lightning_logs/."),
    "predict_figure": (bool | None, None, "For `predict`: save figures/predictions.png (true) or not (false); unset, "
                       "the PredictionWriter's own save_figure decides."),
}  # fmt: skip
ONNX_EXPLAIN = (
    "--explain needs a checkpoint (.ckpt): attributions follow the network's gradients, and {path} is an ONNX "
    "export, which has none. Give the checkpoint it was exported from."
)


def add_options(parser: LightningArgumentParser) -> None:
    """:data:`OPTIONS`, and the "not a digit" score to fit after ``fit`` (``--ood.method``, ``--ood.keep``,
    ``--ood.keep_transformed``)."""
    for name, (kind, default, help) in OPTIONS.items():
        parser.add_argument(f"--{name}", type=kind, default=default, help=help)
    parser.add_argument(
        "--ood.method",
        type=Literal["max_softmax", "energy", "mahalanobis", "mahalanobis_normalized"] | None,  # OOD_METHODS
        default=None,
        help="For `fit`: after training (and --calibrate), fit this 'not a digit' score (statistics on the "
        "training images, threshold on the validation split; refused when it is the test set) and save it in "
        "checkpoints/calibrated.ckpt.",
    )
    parser.add_argument(
        "--ood.keep",
        type=float,
        default=0.99,
        help="For `fit` with --ood.method: the share of validation digits the 'not a digit' threshold keeps.",
    )
    parser.add_argument(
        "--ood.keep_transformed",
        type=bool,
        default=False,
        help="For `fit` with --ood.method: keep that share of the validation digits as data.augment and data.distort "
        "transform them in training (four seeded draws of each), not as MNIST has them: for a recipe meant for "
        "other people's digits (configs/robust.yaml).",
    )


def check_options(options: Any, subcommand: str) -> None:
    """Refuse, with one message each, what cannot run: the environment (accelerator, folders), the checkpoint
    argument (and prepare a resume), calibration or an OOD fit on the test split, ``--explain`` of an ONNX file."""
    check_run_environment(options, subcommand)  # the accelerator, the folders it writes: one message each
    checkpoint = check_checkpoint(subcommand, options.get("ckpt_path"), options.get("model"))
    if subcommand == "fit" and options.get("ckpt_path"):
        prepare_resume(options, checkpoint)
    if subcommand == "fit" and options.get("calibrate"):
        check_calibratable(options.data.get("val_split"), option="--calibrate")
    if subcommand == "fit" and options.get("ood") and options.ood.get("method"):
        check_ood_fittable(
            options.data.get("val_split"), options.ood.method, keep=options.ood.keep, keep_option="--ood.keep"
        )
    if subcommand == "predict" and is_onnx(options.get("ckpt_path")) and options.get("explain"):
        raise UserError(ONNX_EXPLAIN.format(path=options.ckpt_path))


def data_seed_from_run_seed(options: Any, fallback: int | None = None) -> None:
    """Give an unset ``data.seed`` the run's ``seed_everything`` when that is a number (``true`` is one only once
    Lightning has drawn it), else ``fallback``."""
    data = options.get("data")
    if data is None or "seed" not in data or data.seed is not None:
        return
    seed = options.get("seed_everything")
    data.seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else fallback


def given(option: Any, default: Any) -> Any:
    """``option`` where the user gave it, else ``default`` (the callback's own setting)."""
    return default if option is None else option
