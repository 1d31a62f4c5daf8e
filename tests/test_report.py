"""What a run leaves behind: figures as PNG, TensorBoard scalars, histograms and images, the hyperparameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.cli import main
from tests.conftest import CONFIGS, TinyMNIST

FIGURES = ("train_samples", "training_curves", "confusion_matrix", "test_predictions", "misclassified")


@pytest.fixture
def finished_run(tiny_mnist: TinyMNIST) -> Path:
    main(
        ["fit", "--config", str(CONFIGS / "compact.yaml"), "--trainer.max_epochs", "2",
         "--trainer.enable_progress_bar", "false", "--data.eval_batch_size", "16"]
    )  # fmt: skip
    (run,) = Path("lightning_logs/compact").glob("version_*")
    return run


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
