"""The LightningCLI of ``fit``, ``validate``, ``test`` and ``predict``: the network chosen in YAML, the report
callbacks given in code, a base config loaded first, and a test after ``fit`` by default.

A recipe (``configs/*.yaml``) holds only what differs from ``defaults.yaml`` beside this file; every run also gets
:data:`RUN_CALLBACKS`, each with its options under its own key (``--checkpoint.monitor val/loss``).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lit.callbacks import EpochTimer, MetricsReport, PredictionWriter, ResumeHint, RunConfigSaver
from mnist_lit.callbacks.progress import default_progress_bar
from mnist_lit.callbacks.run_callbacks import RUN_CALLBACKS, with_run_callbacks
from mnist_lit.cli.options import ONNX_EXPLAIN, add_options, check_options, data_seed_from_run_seed, given
from mnist_lit.cli.registry import COMMANDS
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.errors import UserError
from mnist_lit.models.base import MNISTClassifier
from mnist_lit.training.calibrate import save_calibrated
from mnist_lit.training.checkpoints import AtomicCheckpointIO
from mnist_lit.training.ckpt_path import is_model_folder_path, is_onnx, load_weights
from mnist_lit.training.ood import NOTHING_TRANSFORMED

#: The base config, read before any ``--config``: what all recipes share.
DEFAULTS = Path(__file__).with_name("defaults.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class MNISTLitCLI(LightningCLI):
    """LightningCLI with the run callbacks, ``--test_after_fit``, ``--init_weights``, ``--calibrate`` and the predict
    options, and checkpoint arguments checked (:mod:`mnist_lit.training.ckpt_path`) before Lightning reads them."""

    #: ``predict --ckpt_path model.onnx``: the exported model, which ONNX Runtime runs (after_instantiate_classes)
    onnx_path: str | None = None
    #: ``predict --ckpt_path DIR/``: a model folder, whose weights are loaded into the configured network
    folder_path: str | None = None

    def __init__(
        self, args: list[str] | None = None, run: bool = True, callbacks: list[Callback] | None = None
    ) -> None:
        """``callbacks`` join the config's own (``tune`` adds its pruning callback: an object no config can name)."""
        defaults = {"default_config_files": [str(DEFAULTS)]}
        super().__init__(
            MNISTClassifier,
            MNISTDataModule,
            subclass_mode_model=True,
            save_config_callback=RunConfigSaver,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            trainer_defaults={"callbacks": callbacks} if callbacks else None,
            parser_kwargs={name: dict(defaults) for name in SUBCOMMANDS} if run else defaults,
            args=args,
            run=run,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """The parser, without abbreviations: argparse would take --trainer.max_epoch for --trainer.max_epochs."""
        kwargs.setdefault("allow_abbrev", False)
        others = "; ".join(f"{name} ({summary})" for name, (_, summary) in COMMANDS.items())
        kwargs.setdefault("epilog", f"Other commands, each with its own --help: {others}.")
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """The run callbacks' options, and ours: what to do after ``fit``, and ``predict``'s shortcuts."""
        for key, callback in RUN_CALLBACKS.items():
            parser.add_class_arguments(callback, key, fail_untyped=False, instantiate=True, sub_configs=True)
        add_options(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check ``--ckpt_path`` before Lightning reads it (and would fail with a traceback)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        options = self.config[subcommand]
        data_seed_from_run_seed(options)  # before the resume check compares the config with the checkpoint's
        check_options(options, subcommand)
        if subcommand == "predict" and is_onnx(options.get("ckpt_path")):  # hidden from Lightning's torch.load
            self.onnx_path, options.ckpt_path = options.ckpt_path, None
        if subcommand == "predict" and is_model_folder_path(options.get("ckpt_path")):  # not a torch.load file
            self.folder_path, options.ckpt_path = options.ckpt_path, None

    def before_instantiate_classes(self) -> None:
        """An unset ``data.seed`` becomes the run's seed (``seed_everything``, as Lightning has just set it), so that
        ``--seed_everything N`` alone gives another split, shuffle and augmentation, not only other initial weights.
        Put an ``.onnx`` or model folder ``--ckpt_path`` back into the config, so the run folder's config.yaml
        records it."""
        options = self.config[self.subcommand] if self.subcommand else self.config
        data_seed_from_run_seed(options, fallback=0)
        if self.onnx_path or self.folder_path:
            self.config.predict.ckpt_path = self.onnx_path or self.folder_path

    def after_instantiate_classes(self) -> None:
        """``predict --ckpt_path model.onnx``: ONNX Runtime runs the exported model in place of the configured network
        (:class:`~mnist_lit.interop.onnx.OnnxPredictor`), and Lightning loads no checkpoint."""
        if self.onnx_path:
            from mnist_lit.interop.onnx import OnnxPredictor  # ONNX Runtime is an optional extra: import it only here

            self.model = OnnxPredictor.for_config(self.onnx_path, configured=type(self.model))
            self.config_init.predict.ckpt_path = None
        if self.folder_path:  # a model folder: its weights and buffers, checked, into the configured network
            from mnist_lit.interop.model_folder import load_folder_into

            self.datamodule.normalization = load_folder_into(self.model, self.folder_path)
            self.config_init.predict.ckpt_path = None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer with the config's callbacks, then the run callbacks, a progress bar that redraws every few
        steps (unless the config brings its own or switches it off) and atomic checkpoint writes (unless the config
        brings plugins). A config that still lists a run callback keeps its own, with a warning."""
        prefix = f"{self.subcommand}." if self.subcommand else ""
        trainer_config = self.config_init.get(f"{prefix}trainer") or {}
        listed = trainer_config.get("callbacks") or []
        run = {key: self.config_init[f"{prefix}{key}"] for key in RUN_CALLBACKS}
        checkpointing = trainer_config.get("enable_checkpointing") is not False
        callbacks = with_run_callbacks(listed if isinstance(listed, list) else [listed], run, checkpointing)
        run_config = self.config.get(str(self.subcommand), self.config)  # as RunConfigSaver writes it
        config = yaml.safe_load(self._parser(self.subcommand).dump(run_config, skip_none=False))
        timer = next((c for c in callbacks if isinstance(c, EpochTimer)), None)
        for report in (c for c in callbacks if isinstance(c, MetricsReport)):
            report.use_run(config, timer)  # the config as config.yaml records it, without reading that file back
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            callbacks.append(default_progress_bar())
        tracking = self.config_init.get(f"{prefix}mlflow")
        if tracking is not None:  # configs/mlflow.yaml's tracker, beside the run's callbacks
            callbacks.append(tracking)
        kwargs.setdefault("callbacks", callbacks)
        if not trainer_config.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        """Refuse ``--ood.keep_transformed`` for data that transforms nothing (before any epoch is spent), say how to
        continue if the run is stopped, and load ``--init_weights`` when given."""
        ood = self.config.fit.get("ood") or {}
        if ood.get("method") and ood.get("keep_transformed") and not self.datamodule.transforms_images:
            raise UserError(NOTHING_TRANSFORMED.format(option="--ood.keep_transformed true"))
        self.trainer.callbacks.append(  # type: ignore[attr-defined]  # Lightning's connectors set Trainer.callbacks
            ResumeHint([str(c) for c in self.config.fit.get("config") or []])
        )
        init_weights = self.config.fit.get("init_weights")
        if init_weights:
            load_weights(self.model, init_weights)

    def before_predict(self) -> None:
        """Apply ``--predict_figure``, ``--explain`` and ``--unsure_threshold`` to every PredictionWriter."""
        options = self.config.predict
        for writer in self.trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning's connectors
            if isinstance(writer, PredictionWriter):
                writer.save_figure = given(options.get("predict_figure"), writer.save_figure)
                writer.explain = given(options.get("explain"), writer.explain)
                writer.unsure_threshold = given(options.get("unsure_threshold"), writer.unsure_threshold)
                if writer.explain is not None and self.onnx_path:
                    raise UserError(ONNX_EXPLAIN.format(path=self.onnx_path))

    def after_fit(self) -> None:
        """With ``--calibrate``, fit the temperature and threshold; then evaluate on the test set right after training,
        as the notebooks do, unless switched off."""
        if self.trainer.interrupted:
            return
        ood = self.config.fit.get("ood") or {}
        if self.config.fit.get("calibrate") or ood.get("method"):
            save_calibrated(
                self.trainer, self.model, self.datamodule, temperature=bool(self.config.fit.get("calibrate")),
                ood_method=ood.get("method"), ood_keep=ood.get("keep", 0.99),
                ood_keep_transformed=bool(ood.get("keep_transformed")),
            )  # fmt: skip
        if self.config.fit.get("test_after_fit", True):
            self.trainer.test(self.model, datamodule=self.datamodule)


def build_cli(args: list[str] | None = None, run: bool = True, callbacks: list[Callback] | None = None) -> MNISTLitCLI:
    """The CLI as ``python -m mnist_lit`` builds it; with ``run=False``, no subcommand: the Trainer, model and
    datamodule of the given config, built and not run (the benchmark and tests use that). ``callbacks`` are added to
    the config's own (``tune`` adds its pruning callback: an object no config file can name)."""
    return MNISTLitCLI(args=args, run=run, callbacks=callbacks)


def run_lightning(args: list[str] | None) -> None:
    """Run a Lightning subcommand; a run ended by SIGTERM exits with the shell's code for it, not success."""
    try:
        build_cli(args)
    except SIGTERMException:
        raise SystemExit(128 + signal.SIGTERM) from None
