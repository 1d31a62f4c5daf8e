"""The command line: one LightningCLI, the network chosen in YAML, test after fit by default.

``python -m mnist_lit fit --config configs/keras_report.yaml`` trains, restores the best weights (when the config
asks for it) and evaluates on the test set; ``validate``, ``test`` and ``predict`` take ``--ckpt_path``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit.callbacks.outputs import run_dir_or_warn
from mnist_lit.callbacks.predictions import PredictionWriter
from mnist_lit.callbacks.progress import EpochLineProgress
from mnist_lit.cli.registry import COMMANDS, configure_logging, run_command
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.errors import CheckpointError, UserError
from mnist_lit.models.base import MNISTClassifier
from mnist_lit.training.calibrate import calibrate, check_calibratable
from mnist_lit.training.checkpoints import AtomicCheckpointIO, class_path_of, read_checkpoint, resolve_class
from mnist_lit.training.ood import check_ood_fittable, fit_ood
from mnist_lit.training.resume import check_resumable, latest_last_checkpoint, run_folder_of
from mnist_lit.utils.io import free_name

_ONNX_EXPLAIN = (
    "--explain needs a checkpoint (.ckpt): attributions follow the network's gradients, and {path} is an ONNX "
    "export, which has none. Give the checkpoint it was exported from."
)

#: ``ckpt_path`` values that Lightning resolves itself rather than as a file.
SPECIAL_CKPT_PATHS = {"best", "last", "hpc", "registry"}

#: Steps between redraws of the default progress bar. Lightning's default, 1, redraws it every step, which costs a
#: measurable share of a small network's step (see the benchmark page) for redraws no one reads.
PROGRESS_BAR_REFRESH_RATE = 10


class RunConfigSaver(SaveConfigCallback):
    """LightningCLI's config saver, writing ``config.yaml`` only into a run's own folder.

    Each run gets a new ``version_N`` folder, so overwriting is safe there (and re-running with a fixed version does
    not fail); without a logger the stock saver would write ``./config.yaml``, perhaps over a file of the user's, so
    nothing is saved then.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if run_dir_or_warn(trainer, "config.yaml") is not None:
            super().setup(trainer, pl_module, stage)


class MNISTLitCLI(LightningCLI):
    """LightningCLI with ``--test_after_fit`` and checkpoint checks that fail with a message, not a traceback."""

    #: ``predict --ckpt_path model.onnx``: the exported model, which ONNX Runtime runs (after_instantiate_classes)
    onnx_path: str | None = None

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """The parser, without abbreviations: argparse would take --trainer.max_epoch for --trainer.max_epochs."""
        kwargs.setdefault("allow_abbrev", False)
        others = "; ".join(f"{name} ({summary})" for name, (_, summary) in COMMANDS.items())
        kwargs.setdefault("epilog", f"Other commands, each with its own --help: {others}.")
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``--test_after_fit``, so that ``fit`` can end with the notebooks' test evaluation, or not; and
        ``--predict_figure``, which reaches the PredictionWriter wherever it sits in the callback list."""
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After `fit`, evaluate the final (restored-best, if so configured) weights on the test set.",
        )
        parser.add_argument(
            "--init_weights",
            type=str | None,
            default=None,
            help="For `fit`: start a new run from this checkpoint's weights (fine-tuning); unlike --ckpt_path, the "
            "optimizer, epochs and callbacks start afresh.",
        )
        parser.add_argument(
            "--calibrate",
            type=bool,
            default=False,
            help="For `fit`: after training, fit a temperature and the 'not sure' threshold on the validation split "
            "(refused when it is the test set), save them in checkpoints/calibrated.ckpt, then test with them.",
        )
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
            "--unsure_threshold",
            type=float | None,
            default=None,
            help="For `predict`: mark answers whose top probability is under this as 'not sure' (default: the "
            "checkpoint's own threshold, from `calibrate`; 0: never).",
        )
        parser.add_argument(
            "--explain",
            type=Literal["ig", "saliency", "gradcam"] | None,
            default=None,
            help="For `predict`: also save, per input, the image beside an attribution map (Captum: ig = integrated "
            "gradients, saliency, gradcam) in figures/explanations/. Checkpoints only: ONNX has no gradients.",
        )
        parser.add_argument(
            "--predict_figure",
            type=bool | None,
            default=None,
            help="For `predict`: save figures/predictions.png (true) or not (false); unset, the PredictionWriter's "
            "own save_figure decides.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check ``--ckpt_path`` before Lightning reads it (and would fail with a traceback)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            options = self.config[subcommand]
            checkpoint = check_checkpoint(subcommand, options.get("ckpt_path"), options.get("model"))
            if subcommand == "fit" and options.get("ckpt_path"):
                prepare_resume(options, checkpoint)
            if subcommand == "fit" and options.get("calibrate"):
                check_calibratable(options.data.get("val_split"), option="--calibrate")
            if subcommand == "fit" and options.get("ood") and options.ood.get("method"):
                check_ood_fittable(
                    options.data.get("val_split"), options.ood.method, keep=options.ood.keep, keep_option="--ood.keep"
                )
            if subcommand == "predict" and options.get("explain") and is_onnx(options.get("ckpt_path")):
                raise UserError(_ONNX_EXPLAIN.format(path=options.ckpt_path))
            if subcommand == "predict" and is_onnx(options.get("ckpt_path")):  # hidden from Lightning's torch.load
                self.onnx_path, options.ckpt_path = options.ckpt_path, None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, writing checkpoints atomically, with a progress bar that redraws every
        ``PROGRESS_BAR_REFRESH_RATE`` steps.

        Each only when the config does not bring its own: plugins, or a progress bar callback (which wins, so a config
        can still ask for ``TQDMProgressBar`` with ``refresh_rate: 1``), or switches the bar off.
        """
        prefix = f"{self.subcommand}." if self.subcommand else ""
        trainer_config = self.config_init.get(f"{prefix}trainer") or {}
        callbacks = trainer_config.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        wants_bar = trainer_config.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs.setdefault("callbacks", [*callbacks, default_progress_bar()])
        if not trainer_config.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        """Keep ``checkpoints/last.ckpt`` at every epoch's end, say how to continue if the run is stopped, and load
        ``--init_weights`` when given."""
        checkpoint = self.trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and not checkpoint.save_last:
            checkpoint.save_last = True
        self.trainer.callbacks.append(  # type: ignore[attr-defined]  # Lightning's connectors set Trainer.callbacks
            ResumeHint([str(c) for c in self.config.fit.get("config") or []])
        )
        init_weights = self.config.fit.get("init_weights")
        if init_weights:
            load_weights(self.model, init_weights)

    def before_predict(self) -> None:
        """Apply ``--predict_figure``, ``--explain`` and ``--unsure_threshold`` to every PredictionWriter."""
        options = self.config.predict
        for callback in self.trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning's connectors
            if isinstance(callback, PredictionWriter):
                if options.get("predict_figure") is not None:
                    callback.save_figure = options.predict_figure
                if options.get("explain"):
                    callback.explain = options.explain
                if options.get("unsure_threshold") is not None:
                    callback.unsure_threshold = options.unsure_threshold
                if callback.explain is not None:
                    if self.onnx_path:
                        raise UserError(_ONNX_EXPLAIN.format(path=self.onnx_path))
                    from mnist_lit.inference.explain import attribute, require_captum

                    require_captum()  # before the predict epoch, not after it

                    callback.explainer = attribute

    def after_instantiate_classes(self) -> None:
        """``predict --ckpt_path model.onnx``: ONNX Runtime runs the exported model in place of the configured network
        (:class:`~mnist_lit.interop.onnx.OnnxPredictor`), and Lightning loads no checkpoint."""
        if self.onnx_path:
            from mnist_lit.interop.onnx import OnnxPredictor  # ONNX Runtime is an optional extra: import it only here

            self.model = OnnxPredictor.for_config(self.onnx_path, configured=type(self.model))
            self.config_init.predict.ckpt_path = None

    def before_instantiate_classes(self) -> None:
        """Put an ``.onnx`` ``--ckpt_path`` back into the config, so the run folder's config.yaml records it."""
        if self.onnx_path:
            self.config.predict.ckpt_path = self.onnx_path

    def after_fit(self) -> None:
        """With ``--calibrate``, fit the temperature and threshold; then evaluate on the test set right after training,
        as the notebooks do, unless switched off."""
        if self.trainer.interrupted:
            return
        ood = self.config.fit.get("ood") or {}
        if self.config.fit.get("calibrate") or ood.get("method"):
            self._calibrate(bool(self.config.fit.get("calibrate")), ood.get("method"), ood.get("keep", 0.99))
        if self.config.fit.get("test_after_fit", True):
            self.trainer.test(self.model, datamodule=self.datamodule)

    def _calibrate(self, temperature: bool, ood_method: str | None, ood_keep: float) -> None:
        """Temperature scaling on the validation split, then the OOD score, as asked; saved as
        ``checkpoints/calibrated.ckpt`` (a free name)."""
        if temperature:
            result = calibrate(self.model, self.datamodule)
            self.model.calibration_fit = result.as_dict()
            rank_zero_info(result.summary())
        if ood_method:
            ood = fit_ood(self.model, self.datamodule, ood_method, ood_keep)
            self.model.ood_fit = ood.as_dict()
            rank_zero_info(ood.summary())
        checkpoint = self.trainer.checkpoint_callback
        dirpath = checkpoint.dirpath if isinstance(checkpoint, ModelCheckpoint) else None
        folder = Path(dirpath) if dirpath else None
        if folder is None:
            rank_zero_info("No checkpoint folder: the calibration is used by this run's test only.")
            return
        path = (
            free_name(folder / "calibrated.ckpt", keep_suffix=True)
            if self.trainer.is_global_zero
            else folder / "calibrated.ckpt"
        )
        path = self.trainer.strategy.broadcast(path)
        self.trainer.save_checkpoint(path)
        rank_zero_info(f"Wrote {path}")


def is_onnx(ckpt_path: Any) -> bool:
    """Whether ``--ckpt_path`` names an exported ONNX model rather than a checkpoint."""
    return str(ckpt_path or "").lower().endswith(".onnx")


class ResumeHint(Callback):
    """When ``fit`` is stopped by Ctrl-C or SIGTERM, say which checkpoint holds the last finished epoch and how to
    continue from it. Lightning stops at the next batch; the epoch under way is replayed from its start on resume."""

    def __init__(self, configs: list[str]) -> None:
        self.configs = configs

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        checkpoint = trainer.checkpoint_callback
        saved = checkpoint.last_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        last = Path(saved) if saved else None
        if last is None or not last.is_file():
            rank_zero_info("Stopped before the first epoch finished: there is no checkpoint to continue from.")
            return
        saved_epoch = torch.load(last, map_location="cpu", weights_only=False, mmap=True)["epoch"]  # this run's own
        configs = " ".join(f"--config {c}" for c in self.configs)
        rank_zero_info(
            f"Stopped during epoch {trainer.current_epoch} (counted from 0). {last} holds the end of epoch "
            f"{saved_epoch}; continue the run, in the same folder, with the same options and:\n"
            f"  python -m mnist_lit fit {configs} --ckpt_path {last}"
        )


def prepare_resume(options: Any, checkpoint: dict[str, Any] | None) -> None:
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


def default_progress_bar() -> ProgressBar:
    """A tqdm bar in a terminal; one line per epoch when standard output is a file or a pipe (tqdm writes there)."""
    if sys.stdout.isatty():
        return TQDMProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE)
    return EpochLineProgress()


def check_checkpoint(subcommand: str, ckpt_path: str | None, model_config: Any) -> dict[str, Any] | None:
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
    if is_onnx(ckpt_path):  # an exported model: `predict` runs it in ONNX Runtime (see after_instantiate_classes)
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
    configured = getattr(model_config, "class_path", None) if model_config is not None else None
    if saved and configured and resolve_class(saved) != resolve_class(configured):
        raise CheckpointError(
            f"--ckpt_path {ckpt_path} holds a {saved.rsplit('.', 1)[-1]}, but the config selects "
            f"{configured.rsplit('.', 1)[-1]}. Use the config the checkpoint was trained with (the run folder keeps "
            "it as config.yaml), or set model.class_path to match."
        )
    return checkpoint


def build_cli(args: list[str] | None = None, run: bool = True, callbacks: list[Callback] | None = None) -> MNISTLitCLI:
    """The CLI as ``python -m mnist_lit`` builds it; with ``run=False``, no subcommand: the Trainer, model and
    datamodule of the given config, built and not run (the benchmark and tests use that). ``callbacks`` are added to
    the config's own (``tune`` adds its pruning callback: an object no config file can name)."""
    return MNISTLitCLI(
        MNISTClassifier,
        MNISTDataModule,
        subclass_mode_model=True,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        trainer_defaults={"callbacks": callbacks} if callbacks else None,
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run the CLI; ``args`` replaces ``sys.argv[1:]`` (tests call ``main([...])`` in-process)."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in COMMANDS:
        run_command(argv)
        return
    configure_logging()
    try:
        build_cli(None if args is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except SIGTERMException:
        raise SystemExit(128 + signal.SIGTERM) from None  # the shell's code for "ended by SIGTERM", not success
