"""``--config configs/mlflow.yaml``: a tiny fit tracked in MLflow beside TensorBoard, read back through MLflow's own
client (params, per-epoch metrics, artifacts); an unreachable tracking server stops the command before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_lit.cli import main
from tests.helpers import CONFIGS, TinyMNIST, error_message, exit_code, runs

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient

OVERLAY = ["--config", str(CONFIGS / "compact.yaml"), "--config", str(CONFIGS / "mlflow.yaml")]
QUIET = ["--trainer.enable_progress_bar", "false"]


def test_a_fit_is_tracked_in_mlflow_and_tensorboard(tiny_mnist: TinyMNIST, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    main(["fit", *OVERLAY, "--trainer.max_epochs", "2", *QUIET])
    run_folder = runs("compact")[-1]
    assert list(run_folder.glob("events.out.tfevents.*"))  # TensorBoard still writes its events
    client = MlflowClient(tracking_uri=f"sqlite:///{Path('mlruns/mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("compact")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == run_folder.name
    assert run.data.params["lr"] == "0.001" and run.data.params["batch_size"] == "128"
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert [m.step for m in history] == sorted({m.step for m in history}) and len(history) == 2  # one per epoch
    assert 0.0 <= run.data.metrics["test/acc"] <= 1.0 and "test/mae" in run.data.metrics
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "figures", "checkpoints"} <= top
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/confusion_matrix.png" in figures
    (checkpoint,) = client.list_artifacts(run.info.run_id, "checkpoints")
    assert checkpoint.path.endswith(".ckpt") and checkpoint.file_size > 0
    local = client.download_artifacts(run.info.run_id, "metrics.json", str(Path("downloaded").resolve()))
    assert Path(local).read_bytes() == (run_folder / "metrics.json").read_bytes()


def test_an_unreachable_tracking_server_stops_before_training(
    tiny_mnist: TinyMNIST, capsys: pytest.CaptureFixture
) -> None:
    uri = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
    assert exit_code(["fit", *OVERLAY, "--mlflow.tracking_uri", uri, *QUIET]) == 1
    err = capsys.readouterr().err
    message = error_message(err)
    assert message.startswith(f"error: --mlflow.tracking_uri {uri}: MLflow cannot reach this tracking store")
    assert "Nothing was trained" in message and "Traceback" not in message
    assert not list(Path("lightning_logs").glob("compact/version_*/checkpoints/*.ckpt"))
