"""What a run leaves behind: figures as PNG, TensorBoard scalars, histograms and images, the hyperparameters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.cli import main
from mnist_lit.reporting import plots
from tests.helpers import CONFIGS, TinyMNIST, runs

FIGURES = ("train_samples", "training_curves", "confusion_matrix", "test_predictions", "misclassified")


@pytest.fixture
def finished_run(tiny_mnist: TinyMNIST, monkeypatch: pytest.MonkeyPatch) -> Path:
    drawn: list[np.ndarray] = []  # the matrices the heatmap figure is drawn from
    heatmap = plots.confusion_heatmap
    monkeypatch.setattr(
        plots, "confusion_heatmap", lambda cm, *a, **k: drawn.append(np.array(cm)) or heatmap(cm, *a, **k)
    )
    main(
        ["fit", "--config", str(CONFIGS / "compact.yaml"), "--trainer.max_epochs", "2",
         "--trainer.enable_progress_bar", "false", "--data.eval_batch_size", "16"]
    )  # fmt: skip
    (run,) = Path("lightning_logs/compact").glob("version_*")
    np.save(run / "heatmap_input.npy", np.stack(drawn))
    return run


def test_figures_tensorboard_and_metrics_json_report_one_evaluation(finished_run: Path) -> None:
    report = json.loads((finished_run / "metrics.json").read_text())
    (drawn,) = np.load(finished_run / "heatmap_input.npy")
    assert drawn.tolist() == report["confusion_matrix"]  # the figure is the matrix metrics.json holds
    events = EventAccumulator(str(finished_run), size_guidance={"scalars": 0})
    events.Reload()
    for name, value in report["geometric"].items():  # TensorBoard keeps float32: the same number, rounded so
        (logged,) = events.Scalars(f"test/{name}")
        assert logged.value == np.float32(value), name
    for kind in ("precision", "recall"):
        for digit, value in enumerate(report["per_class"][kind]):
            (logged,) = events.Scalars(f"test_per_class/{kind}_{digit}")
            assert logged.value == np.float32(value), (kind, digit)
    (acc,) = events.Scalars("test/acc")
    assert acc.value == np.float32(report["test_acc"])


def test_every_figure_is_a_readable_png_of_a_sensible_size(finished_run: Path) -> None:
    for name in FIGURES:
        path = finished_run / "figures" / f"{name}.png"
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            image.verify()
        assert 400 <= width <= 3000 and 300 <= height <= 3000, (name, image.size)


def test_tensorboard_holds_scalars_histograms_figures_and_hparams(finished_run: Path) -> None:
    events = EventAccumulator(str(finished_run), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    scalars = set(tags["scalars"])
    for stage in ("train", "val", "test"):
        assert {f"{stage}/loss", f"{stage}/acc"} <= scalars
    for stage in ("val", "test"):
        assert {f"{stage}/{m}" for m in ("mae", "mse", "trace_accuracy", "off_diagonal_mass")} <= scalars
        assert {f"{stage}_per_class/precision_{d}" for d in range(10)} <= scalars
    assert "time/epoch_seconds" in scalars
    assert len(events.Scalars("val/loss")) == 2

    histograms = set(tags["histograms"])
    layers = ("net.0", "net.4", "net.9", "net.12")  # the two convolutions and the two dense layers
    assert {f"weights/{layer}.{kind}" for layer in layers for kind in ("weight", "bias")} <= histograms
    assert len(events.Histograms("weights/net.0.weight")) == 2  # one per epoch, as histogram_freq=1

    assert {f"figures/{name}" for name in FIGURES} <= set(tags["images"])
    assert (finished_run / "hparams.yaml").read_text().count("lr:") == 1


def test_metrics_json_takes_fit_facts_from_lightning_not_from_other_callbacks(tiny_mnist: TinyMNIST) -> None:
    config = yaml.safe_load((CONFIGS / "keras_report.yaml").read_text())
    optional = ("RestoreBestWeights", "WeightHistograms")  # the recipe's own; the run callbacks are always there
    callbacks = config["trainer"]["callbacks"]
    config["trainer"]["callbacks"] = [c for c in callbacks if not c["class_path"].endswith(optional)]
    assert len(config["trainer"]["callbacks"]) == len(callbacks) - len(optional)
    Path("lean.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "--config", "lean.yaml", "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false",
          "--data.eval_batch_size", "16", "--data.batch_size", "32"])  # fmt: skip
    (run,) = runs("keras_report")
    report = json.loads((run / "metrics.json").read_text())
    assert None not in report.values(), report
    assert report["epochs_run"] == 3 and len(report["seconds_per_epoch"]) == 3
    assert report["monitor"] == "val/loss" and 0 <= report["best_epoch"] < 3
    assert Path(report["best_checkpoint"]).is_file() and f"best-{report['best_epoch']}-" in report["best_checkpoint"]
    assert report["geometric"]["trace_accuracy"] == pytest.approx(report["test_acc"])


def test_a_writer_given_a_foreign_module_says_so_at_start_up(tiny_mnist: TinyMNIST) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.demos.boring_classes import BoringModel

    from mnist_lit.callbacks import MetricsReport

    trainer = pl.Trainer(fast_dev_run=True, callbacks=[MetricsReport()], logger=False, enable_progress_bar=False)
    with pytest.raises(TypeError, match="MetricsReport reads the evaluation an mnist_lit network computes"):
        trainer.fit(BoringModel())
