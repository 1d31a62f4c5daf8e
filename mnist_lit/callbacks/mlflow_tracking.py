"""MLflow as a second tracker beside TensorBoard (``--config configs/mlflow.yaml``).

:class:`MLflowTracking` adds Lightning's own :class:`~lightning.pytorch.loggers.MLFlowLogger` to the run's loggers
when the Trainer sets up, so the params (the model's and the data's hyperparameters) and every metric Lightning logs
(per epoch and per logged step) reach MLflow as they reach TensorBoard; at the end it logs the run's files as
artifacts: ``metrics.json``, ``config.yaml``, the figures and the best checkpoint.

Where: a tracking URI given on the command line (``--mlflow.tracking_uri http://host:5000``), else
``$MLFLOW_TRACKING_URI``, else a local store in ``mlruns/`` beside the TensorBoard ``save_dir`` (an SQLite database,
``mlruns/mlflow.db``, with the artifacts in ``mlruns/artifacts``: MLflow 3 no longer writes its plain-file store
without an opt-out). The store is checked at set-up, before any training: an unreachable server is a
:class:`~mnist_lit.errors.UserError` naming the URI, not a traceback after the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from mnist_lit.callbacks.run_folder import run_dir
from mnist_lit.errors import UserError

#: How long the set-up check waits for a tracking server, and how often it retries (MLflow's default is 7 retries
#: with back-off, minutes before an unreachable server fails).
CHECK_TIMEOUT_S, CHECK_RETRIES = 10, 0


class MLflowError(UserError):
    """MLflow is not installed, or its tracking store cannot be reached."""


@contextmanager
def _quick_http() -> Iterator[None]:
    """MLflow's HTTP client without its long retries, for one check."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(CHECK_RETRIES)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(CHECK_TIMEOUT_S)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_tracking_uri(uri: str) -> None:
    """Ask the tracking store for one experiment through MLflow's own client; refuse it with a message if it fails."""
    from mlflow.tracking import MlflowClient

    try:
        with _quick_http():
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # MLflow raises its own and requests' types; all mean "cannot use this store"
        detail = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise MLflowError(
            f"--mlflow.tracking_uri {uri}: MLflow cannot reach this tracking store ({detail}). Start the server "
            "(`mlflow server --port 5000`), fix the URI, or leave it out to log to a local mlruns/ folder. Nothing "
            "was trained."
        ) from err


class MLflowTracking(Callback):
    """Log the run to MLflow as well: params, metrics, and ``metrics.json``, the figures and the best checkpoint.

    Args:
        tracking_uri: the MLflow tracking server or store (default: ``$MLFLOW_TRACKING_URI``, else the local
            ``mlruns/`` beside the TensorBoard logs).
        experiment_name: the MLflow experiment (default: the TensorBoard logger's name, e.g. ``compact``).
        run_name: the MLflow run's name (default: the TensorBoard version, e.g. ``version_3``).
        log_checkpoint: log the best checkpoint (else the last one) as an artifact at the end of the fit.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        log_checkpoint: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.log_checkpoint = log_checkpoint
        self.logger: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the store and add an MLFlowLogger to the Trainer's loggers (before Lightning logs the params)."""
        if self.logger is not None:
            return
        try:
            from lightning.pytorch.loggers import MLFlowLogger
        except ImportError as err:  # pragma: no cover - Lightning always has the class; mlflow is what may be missing
            raise MLflowError(f"MLflow tracking needs mlflow: pip install -e '.[tracking]' ({err}).") from err
        try:
            import mlflow  # noqa: F401
        except ImportError as err:
            raise MLflowError(f"--config mlflow.yaml needs mlflow: pip install -e '.[tracking]' ({err}).") from err
        tensorboard = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        uri, artifacts = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), None
        if not uri:
            base = Path(tensorboard.save_dir if tensorboard is not None else "lightning_logs").resolve().parent
            store = base / "mlruns"
            store.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()
        if trainer.is_global_zero:
            check_tracking_uri(uri)
        version = tensorboard.version if tensorboard is not None else None
        self.logger = MLFlowLogger(
            experiment_name=self.experiment_name or (tensorboard.name if tensorboard is not None else "mnist_lit"),
            run_name=self.run_name or (f"version_{version}" if isinstance(version, int) else None),
            tracking_uri=uri,
            artifact_location=artifacts,
            tags={"mnist_lit.model": type(pl_module).__name__, "mnist_lit.stage": stage},
        )
        trainer.loggers = [*trainer.loggers, self.logger]
        rank_zero_info(f"MLflow: logging to {uri} (experiment {self.logger._experiment_name!r}).")

    def _log_files(self, trainer: pl.Trainer, paths: list[tuple[Path, str | None]]) -> None:
        if self.logger is None or not trainer.is_global_zero:
            return
        for path, folder in paths:
            if path.is_file():
                self.logger.experiment.log_artifact(self.logger.run_id, str(path), folder)
            elif path.is_dir():
                self.logger.experiment.log_artifacts(self.logger.run_id, str(path), folder)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The best checkpoint (or the last one), and the run's config.yaml."""
        paths: list[tuple[Path, str | None]] = []
        callback = trainer.checkpoint_callback
        best = (callback.best_model_path or callback.last_model_path) if isinstance(callback, ModelCheckpoint) else ""
        if self.log_checkpoint and best:
            paths.append((Path(best), "checkpoints"))
        folder = run_dir(trainer)
        if folder is not None:
            paths.append((folder / "config.yaml", None))
        self._log_files(trainer, paths)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``metrics.json`` and the figures, written by the report callbacks in the same hook (they run first)."""
        folder = run_dir(trainer)
        if folder is not None:
            self._log_files(trainer, [(folder / "metrics.json", None), (folder / "figures", "figures")])
