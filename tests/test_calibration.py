"""Calibration: ECE and the reliability bins, temperature scaling, the "not sure" threshold, and their way through
fit, calibrate, checkpoints, ONNX, predict, classify and serve."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from mnist_lit.cli import main
from mnist_lit.data import idx
from mnist_lit.inference.torch_runner import TorchRunner
from mnist_lit.reporting.calibration import (
    is_unsure,
    reliability_bins,
    risk_coverage,
    selective_summary,
    unsure_threshold,
)
from mnist_lit.training.calibrate import fit_temperature
from mnist_lit.training.checkpoints import load_trained_network
from tests.helpers import COMPACT, QUIET, CalibratedRun, calibrated_tiny_run, exit_code, post_png, predicted_rows


def made_up_outputs(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N x 10) and labels of an over-confident made-up classifier (about 80% right)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    guess = np.where(rng.random(n) < 0.8, labels, rng.integers(0, 10, n))
    logits = rng.normal(0, 1, (n, 10))
    logits[np.arange(n), guess] += rng.uniform(1, 6, n)
    return torch.from_numpy(logits).softmax(dim=1).numpy(), labels


def test_ece_and_mce_match_a_direct_computation_and_torchmetrics() -> None:
    probs, labels = made_up_outputs()
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    bins = reliability_bins(conf, pred == labels)
    ece, gaps = 0.0, []
    for m in range(15):  # Guo et al.'s bins ((m-1)/M, m/M]
        inside = (conf > m / 15) & (conf <= (m + 1) / 15)
        if inside.any():
            gap = abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
            ece += inside.mean() * gap
            gaps.append(gap)
            assert bins["count"][m] == inside.sum()
    assert bins["ece"] == pytest.approx(ece, abs=1e-12) and bins["mce"] == pytest.approx(max(gaps), abs=1e-12)
    expected = multiclass_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), 10, n_bins=15)
    assert bins["ece"] == pytest.approx(float(expected), abs=1e-6)  # no confidence is exactly on a bin edge here
    assert sum(bins["count"]) == len(labels) and bins["ece"] > 0.02  # the made-up classifier is miscalibrated


def test_unsure_threshold_keeps_the_share_asked_and_risk_coverage_ends_at_the_error_rate() -> None:
    probs, labels = made_up_outputs()
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    threshold = unsure_threshold(conf, keep=0.9)
    answered = ~is_unsure(conf, threshold)
    assert 0.9 <= answered.mean() < 0.9 + 2 / len(conf)
    coverage, risk, _ = risk_coverage(conf, correct)
    assert coverage[-1] == 1.0 and risk[-1] == pytest.approx(1 - correct.mean())
    summary = selective_summary(conf, correct, threshold)
    assert summary["error_rate_answered"] < summary["error_rate_all"]  # the confident answers are the better ones
    assert not is_unsure(conf, None).any()


def test_temperature_scaling_lowers_the_nll_of_an_overconfident_network_and_changes_no_answer() -> None:
    torch.manual_seed(0)
    x = torch.randn(600, 20)
    labels = (x[:, :10] + 1.5 * torch.randn(600, 10)).argmax(dim=1)  # noisy labels: no network is always right
    net = torch.nn.Linear(20, 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        F.cross_entropy(net(x[:300]), labels[:300]).backward()
        optimizer.step()
    with torch.no_grad():
        logits = 6.0 * net(x[300:])  # over-confident: the same answers, logits six times too large
    before = F.cross_entropy(logits, labels[300:])
    temperature = fit_temperature(logits, labels[300:])
    after = F.cross_entropy(logits / temperature, labels[300:])
    assert temperature > 2 and after < before - 0.1
    assert torch.equal((logits / temperature).argmax(dim=1), logits.argmax(dim=1))


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory: pytest.TempPathFactory) -> CalibratedRun:
    """A compact network fitted on tiny MNIST with a held-out validation split and ``--calibrate true``."""
    return calibrated_tiny_run(tmp_path_factory.mktemp("calibrated"))


def test_fit_calibrate_writes_the_temperature_into_a_checkpoint_and_the_report(calibrated_run: CalibratedRun) -> None:
    run = calibrated_run.run
    report = json.loads((run / "metrics.json").read_text())
    scaling = report["temperature_scaling"]
    assert scaling["val_after"]["nll"] <= scaling["val_before"]["nll"]
    assert scaling["val_after"]["accuracy"] == scaling["val_before"]["accuracy"]
    for key in ("calibration", "val_calibration"):
        assert {"ece", "mce", "count", "accuracy", "confidence", "norm"} <= set(report[key])
    assert report["calibration"]["temperature"] == pytest.approx(scaling["temperature"])
    assert sum(report["calibration"]["count"]) == report["num_samples"]
    assert (run / "figures" / "reliability.png").stat().st_size > 5000
    trained = load_trained_network(run / "checkpoints" / "calibrated.ckpt")
    assert float(trained.model.temperature) == pytest.approx(scaling["temperature"])
    assert float(trained.model.unsure_threshold) == pytest.approx(scaling["unsure_threshold"])
    tags = set()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for events in run.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"val/ece", "val/mce", "test/ece", "test/mce"} <= tags


def test_old_checkpoints_load_uncalibrated(calibrated_run: CalibratedRun, tmp_path: Path) -> None:
    path = next((calibrated_run.run / "checkpoints").glob("last-*.ckpt"))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("temperature", "unsure_threshold"):
        del checkpoint["state_dict"][key]  # as saved before the buffers existed
    torch.save(checkpoint, tmp_path / "old.ckpt")
    trained = load_trained_network(tmp_path / "old.ckpt")
    assert float(trained.model.temperature) == 1.0 and float(trained.model.unsure_threshold) == 0.0


def test_calibration_on_the_test_set_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture, tiny_mnist) -> None:
    assert exit_code(["fit", "--config", COMPACT, "--calibrate", "true", *QUIET]) == 1
    assert "validates on the test set" in capsys.readouterr().err and not Path("lightning_logs").exists()


def test_calibrate_command_writes_a_new_checkpoint_and_never_overwrites(
    calibrated_run: CalibratedRun, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idx, "MNIST_FILES", calibrated_run.specs)
    source = next((calibrated_run.run / "checkpoints").glob("last-*.ckpt"))
    before = source.read_bytes()
    args = ["calibrate", "--ckpt_path", str(source), "--data_dir", str(calibrated_run.data)]
    main(args)
    out = capsys.readouterr().out
    written = source.with_name(f"{source.stem}-calibrated.ckpt")
    assert "Temperature T = " in out and f"Wrote {written}" in out and source.read_bytes() == before
    assert float(load_trained_network(written).model.temperature) != 1.0
    assert exit_code(args) == 1 and "exists" in capsys.readouterr().err  # a second time: refused
    written.unlink()
    compact_checkpoint = calibrated_run.root / "test-split.ckpt"
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["val_split"] = "test"
    torch.save(checkpoint, compact_checkpoint)
    assert exit_code(["calibrate", "--ckpt_path", str(compact_checkpoint)]) == 1
    assert "validates on the test set" in capsys.readouterr().err
    if Path("/proc/self").is_dir():  # a data folder the files would be fetched into, which cannot be made
        assert exit_code([*args[:3], "--data_dir", "/proc/nodata"]) == 1
        assert "--data_dir /proc/nodata: the MNIST files are fetched into" in capsys.readouterr().err


def test_the_temperature_is_inside_the_onnx_export_and_in_its_metadata(
    calibrated_run: CalibratedRun, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from mnist_lit.inference.onnx_runner import OnnxRunner

    ckpt = calibrated_run.checkpoint
    main(["export", "--ckpt_path", str(ckpt), "--output", str(tmp_path / "m.onnx"), "--data_dir", "nowhere"])
    onnx, torch_runner = OnnxRunner(tmp_path / "m.onnx"), TorchRunner(ckpt)
    pixels = np.random.default_rng(0).integers(0, 256, (20, 1, 28, 28)).astype(np.float32)
    assert np.abs(onnx.probabilities(pixels) - torch_runner.probabilities(pixels)).max() <= 1e-5
    assert float(onnx.metadata["temperature"]) == pytest.approx(torch_runner.temperature)
    assert onnx.unsure_threshold == pytest.approx(torch_runner.unsure_threshold)
    uncalibrated = PixelProbabilities(ckpt)(pixels)
    assert not np.allclose(uncalibrated, torch_runner.probabilities(pixels), atol=1e-4)  # T does change them


class PixelProbabilities:
    """A checkpoint's probabilities at T = 1, to tell that the temperature is applied."""

    def __init__(self, path: Path) -> None:
        from mnist_lit.inference.torch_runner import PixelClassifier

        trained = load_trained_network(path)
        self.module = PixelClassifier(trained.model.net, trained.normalization).eval()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.from_numpy(pixels)).numpy()


def noise_and_blankish() -> np.ndarray:
    """Inputs that are no digit: uniform noise, and a faint speck on black (N x 28 x 28 uint8)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, 28, 28)).astype(np.uint8)
    speck = np.zeros((4, 28, 28), np.uint8)
    speck[:, 13:15, 13:15] = 60
    return np.concatenate([noise, speck])


def test_noise_is_unsure_and_predict_csv_classify_and_serve_carry_the_flag(
    calibrated_run: CalibratedRun, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from mnist_lit.serve.app import create_app

    ckpt = calibrated_run.checkpoint
    runner = TorchRunner(ckpt)
    images = noise_and_blankish()
    conf = runner.probabilities(images[:, None].astype(np.float32)).max(axis=1)
    assert runner.unsure_threshold is not None and (conf[4:] < runner.unsure_threshold).all()  # the blank-ish ones
    rows = predicted_rows(ckpt, images, tmp_path / "odd.npy")
    assert rows and all(row["unsure"] == str(int(float(row["probability"]) < runner.unsure_threshold)) for row in rows)
    main(["classify", str(tmp_path / "odd.npy"), "--ckpt_path", str(ckpt), "--invert", "never",
          "--unsure_threshold", "1.0"])  # fmt: skip
    assert capsys.readouterr().out.count("not sure: ") == len(rows)
    client = TestClient(create_app(runner))
    answer, seen = post_png(client, images[0])
    assert answer["unsure_threshold"] == pytest.approx(runner.unsure_threshold)
    assert isinstance(answer["unsure"], bool) and answer["runner_up"] != answer["digit"]
    assert client.get("/api/health").json()["unsure_threshold"] == pytest.approx(runner.unsure_threshold)
    expected = runner.probabilities(seen[None, None].astype(np.float32))[0]
    assert np.abs(np.array(answer["probabilities"]) - expected).max() <= 1e-5  # served at the checkpoint's T


def test_a_keras_export_carries_the_temperature_in_its_last_layer(
    calibrated_run: CalibratedRun, tmp_path: Path
) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")  # as in test_keras_interop: Keras runs on PyTorch here
    pytest.importorskip("keras")
    pytest.importorskip("h5py")
    from mnist_lit.interop.keras.mapping import fold_temperature

    ckpt = calibrated_run.checkpoint
    trained = load_trained_network(ckpt)
    t = float(trained.model.temperature)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        folded = fold_temperature(trained.model.net, t)(x)
        assert torch.allclose(folded, trained.model.net(x) / t, atol=1e-5)
    # export runs the written file in Keras and refuses it unless it matches the checkpoint's (calibrated) output
    main(["export", "--ckpt_path", str(ckpt), "--output", str(tmp_path / "m.keras"), "--data_dir", "nowhere"])
    assert (tmp_path / "m.keras").is_file()
