"""'Not a digit': the OOD scores, their threshold, the detection numbers, and their way through fit, calibrate,
checkpoints, ONNX, predict, classify and serve."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from mnist_lit.cli import main
from mnist_lit.data import idx
from mnist_lit.data.images import load_predict_inputs
from mnist_lit.inference.torch_runner import TorchRunner
from mnist_lit.models.compact import CompactCNN
from mnist_lit.models.keras_report import KerasReportCNN
from mnist_lit.models.ood import (
    COVARIANCE_RIDGE,
    OODScorer,
    energy_score,
    mahalanobis_score,
    mahalanobis_statistics,
    max_softmax_score,
    ood_score,
)
from mnist_lit.reporting.ood import (
    auroc,
    detection_summary,
    fpr_at_tpr,
    is_not_digit,
    keep_threshold,
    roc_figure,
    score_difference,
    verdict_flips,
)
from mnist_lit.training.checkpoints import load_trained_network
from tests.helpers import (
    COMPACT,
    HELD_OUT,
    QUIET,
    CalibratedRun,
    calibrated_tiny_run,
    exit_code,
    post_png,
    predicted_rows,
    runs,
    synthetic_digits,
)


def made_up(n: int = 300, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (N x 10), features (N x D, correlated, one of them constant) and labels, made up."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    mixing = torch.randn(d, d, generator=g)
    features = torch.randn(n, d, generator=g) @ mixing + 3.0 * torch.nn.functional.one_hot(labels % d, d).float()
    features[:, -1] = 0.0  # a ReLU that never fires: the covariance is singular
    logits = 4.0 * torch.randn(n, 10, generator=g, dtype=torch.float64).float()
    return logits, features, labels


def test_softmax_scores_match_a_direct_computation() -> None:
    logits, _, _ = made_up()
    z = logits.double().numpy()
    for temperature in (1.0, 1.7):
        exp = np.exp(z / temperature)
        probs = exp / exp.sum(axis=1, keepdims=True)
        msp = max_softmax_score(logits, temperature).numpy()
        np.testing.assert_allclose(msp, -probs.max(axis=1), atol=1e-6)
        energy = energy_score(logits, temperature).numpy()
        np.testing.assert_allclose(energy, -temperature * np.log(exp.sum(axis=1)), rtol=1e-5, atol=1e-5)
    assert bool((max_softmax_score(logits) < 0).all())  # higher: less like a digit; never above 0


def test_mahalanobis_matches_a_direct_computation_with_the_shared_covariance() -> None:
    _, features, labels = made_up()
    means, whitening = mahalanobis_statistics(features, labels)
    f, y = features.double().numpy(), labels.numpy()
    mu = np.stack([f[y == c].mean(axis=0) for c in range(10)])
    centred = f - mu[y]
    covariance = centred.T @ centred / len(f)
    covariance += COVARIANCE_RIDGE * np.trace(covariance) / f.shape[1] * np.eye(f.shape[1])
    precision = np.linalg.inv(covariance)
    np.testing.assert_allclose(means.numpy(), mu, atol=1e-5)
    np.testing.assert_allclose((whitening.double() @ whitening.double().T).numpy(), precision, rtol=1e-4, atol=1e-3)
    probe = features[:20] + torch.randn(20, features.shape[1], generator=torch.Generator().manual_seed(1))
    x = probe.double().numpy()
    direct = np.array([min((v - m) @ precision @ (v - m) for m in mu) for v in x]) / f.shape[1]
    np.testing.assert_allclose(mahalanobis_score(probe, means, whitening).numpy(), direct, rtol=1e-4)
    # A feature that never moved on the training digits makes an input that moves it far from every class.
    moved = features[:5].clone()
    moved[:, -1] = 1.0
    near = mahalanobis_score(features[:5], means, whitening)
    assert bool((mahalanobis_score(moved, means, whitening) > near + 20).all())


def test_the_normalized_mahalanobis_reads_only_the_direction_of_the_features() -> None:
    _, features, labels = made_up()
    unit = features / features.norm(dim=1, keepdim=True)
    means, whitening = mahalanobis_statistics(unit, labels)
    logits = torch.zeros(len(features), 10)
    scores = ood_score("mahalanobis_normalized", logits, features, 1.0, means, whitening)
    torch.testing.assert_close(scores, mahalanobis_score(unit, means, whitening))
    faint = ood_score("mahalanobis_normalized", logits, 0.01 * features, 1.0, means, whitening)
    torch.testing.assert_close(faint, scores, rtol=1e-4, atol=1e-5)  # a faint input is not nearer for being faint
    with pytest.raises(ValueError, match="statistics"):
        ood_score("mahalanobis", logits, None)


def test_the_threshold_keeps_the_share_asked_and_ties_stay_digits() -> None:
    scores = np.random.default_rng(0).normal(size=1000)
    for keep in (0.9, 0.99, 1.0):
        kept = ~is_not_digit(scores, keep_threshold(scores, keep))
        assert keep <= kept.mean() < keep + 1 / len(scores) + 1e-12
    assert not is_not_digit(scores, None).any() and not is_not_digit(scores, float("inf")).any()
    assert keep_threshold(np.ones(10), 0.5) == 1.0 and not is_not_digit(np.ones(10), 1.0).any()
    with pytest.raises(ValueError, match="keep"):
        keep_threshold(scores, 0.0)


def test_auroc_and_fpr_at_95_tpr_match_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    digits = rng.normal(0.0, 1.0, 400)
    others = np.concatenate([rng.normal(2.0, 1.0, 300), np.full(10, 1e4)])  # huge scores: no sigmoid saturation
    pairs = (others[None, :] > digits[:, None]).mean() + 0.5 * (others[None, :] == digits[:, None]).mean()
    assert auroc(digits, others) == pytest.approx(pairs, abs=1e-6)
    threshold = np.sort(digits)[int(np.ceil(0.95 * len(digits))) - 1]  # keeps 95% of the digits
    assert fpr_at_tpr(digits, others) == pytest.approx((others <= threshold).mean(), abs=1e-6)
    assert auroc(digits, digits + 1e6) == 1.0 and fpr_at_tpr(digits, digits + 1e6) == 0.0
    summary = detection_summary(digits, others, threshold=float(threshold))
    assert summary["digits_not_digit"] == pytest.approx(0.05, abs=1 / len(digits))
    fig = roc_figure({"a": (digits, others), "b": (digits, -others)})
    assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()) == 4  # two curves, the diagonal, the 95% line
    assert "AUROC" in fig.axes[0].get_legend().get_texts()[0].get_text()


def test_an_exports_score_check_is_relative_above_1_and_counts_only_clear_verdict_changes() -> None:
    expected = np.array([0.5, 2.0, 1000.0, 3.0], np.float32)
    found = expected + np.array([1e-6, 0.0, 5e-3, 0.0], np.float32)
    assert score_difference(found, expected) == pytest.approx(5e-6, rel=1e-2)  # 5e-3 of 1000: relative
    assert verdict_flips(found, expected, None, 1e-5) == 0  # no threshold: nothing is "not a digit"
    assert verdict_flips(found, expected, 0.5000005, 1e-5) == 0  # 0.5 is on the threshold: either side is right
    assert verdict_flips(found[::-1], expected, 1.5, 1e-5) == 2  # 0.5 and 3.0 swapped sides


def test_the_scorer_survives_a_state_dict_and_old_checkpoints_load_unfitted() -> None:
    model = KerasReportCNN().eval()
    x = torch.randn(8, 1, 28, 28)
    logits, score = model.logits_and_ood_score(x)
    assert torch.allclose(logits, model(x)) and model.features(x).shape == (8, 128)
    assert torch.allclose(score, max_softmax_score(logits)) and not model.ood.fitted  # unfitted: max-softmax
    _, features, labels = made_up(d=128)
    means, whitening = mahalanobis_statistics(features, labels)
    model.ood.set("mahalanobis", 2.5, means, whitening)
    copy = KerasReportCNN()
    copy.load_state_dict(model.state_dict())
    assert copy.ood.describe() == {"method": "mahalanobis", "threshold": 2.5}
    assert torch.equal(copy.ood.whitening, whitening)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("ood.")}
    copy.load_state_dict(old)  # as saved before the OOD buffers existed
    assert copy.ood.describe() == {"method": "max_softmax", "threshold": None}
    with pytest.raises(ValueError, match="do not fit"):
        OODScorer(feature_dim=100).set("mahalanobis", 1.0, means, whitening)


@pytest.fixture(scope="module")
def ood_run(tmp_path_factory: pytest.TempPathFactory) -> CalibratedRun:
    """A compact network fitted on tiny MNIST with a held-out split, calibrated, with the Mahalanobis score."""
    return calibrated_tiny_run(tmp_path_factory.mktemp("ood"), "--ood.method", "mahalanobis", "--ood.keep", "0.98")


def validation_scores(ckpt: Path, data: Path) -> tuple[torch.Tensor, object]:
    """The OOD scores of a checkpoint's own validation split, and the loaded network."""
    from mnist_lit.cli.calibrate import datamodule_for
    from mnist_lit.training.checkpoints import read_checkpoint
    from mnist_lit.training.ood import split_outputs

    model = load_trained_network(ckpt).model
    datamodule = datamodule_for(read_checkpoint(ckpt), str(data))
    datamodule.setup("fit")
    logits, features, _ = split_outputs(model, datamodule, "val")
    return model.ood(logits, features, model.temperature), model


def test_fit_fits_the_score_after_calibrating_and_keeps_the_share_asked(ood_run: CalibratedRun) -> None:
    ckpt = ood_run.checkpoint
    scores, model = validation_scores(ckpt, ood_run.data)
    assert model.ood.method_name == "mahalanobis" and model.ood.fitted and float(model.temperature) != 1.0
    kept = (scores <= model.ood.threshold).float().mean()
    assert 0.98 <= float(kept) < 0.98 + 2 / len(scores)
    noise = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, noise_scores = model.logits_and_ood_score(noise)
    assert float(noise_scores.min()) > float(model.ood.threshold)  # uniform noise is far from every tiny digit


def test_fitting_the_score_on_the_test_set_is_refused(capsys: pytest.CaptureFixture, tiny_mnist) -> None:
    assert exit_code(["fit", "--config", COMPACT, "--ood.method", "energy", *QUIET]) == 1
    err = capsys.readouterr().err
    assert "--ood.method" in err and "validates on the test set" in err and not Path("lightning_logs").exists()
    assert (
        exit_code(["fit", "--config", COMPACT, "--ood.method", "energy", "--ood.keep", "1.5", *HELD_OUT, *QUIET]) == 1
    )
    assert "--ood.keep 1.5: a share of the validation digits" in capsys.readouterr().err


def test_calibrate_refits_the_checkpoints_score_or_the_one_asked(
    ood_run: CalibratedRun, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(idx, "MNIST_FILES", ood_run.specs)
    source = ood_run.checkpoint
    main(["calibrate", "--ckpt_path", str(source), "--output", str(tmp_path / "a.ckpt"), "--ood_keep", "0.9"])
    assert "OOD score mahalanobis" in capsys.readouterr().out  # the checkpoint's own score, fitted again
    a = load_trained_network(tmp_path / "a.ckpt").model
    original = load_trained_network(source).model
    assert a.ood.method_name == "mahalanobis" and float(a.ood.threshold) < float(original.ood.threshold)
    torch.testing.assert_close(a.ood.class_means, original.ood.class_means)
    main(["calibrate", "--ckpt_path", str(source), "--output", str(tmp_path / "b.ckpt"), "--ood", "energy"])
    b = load_trained_network(tmp_path / "b.ckpt").model
    scores, _ = validation_scores(tmp_path / "b.ckpt", ood_run.data)
    assert b.ood.method_name == "energy" and float((scores <= b.ood.threshold).float().mean()) >= 0.99
    main(["calibrate", "--ckpt_path", str(source), "--output", str(tmp_path / "c.ckpt"), "--ood", "none"])
    assert not load_trained_network(tmp_path / "c.ckpt").model.ood.fitted


def test_calibrate_refuses_a_transformed_threshold_for_a_run_that_transforms_nothing(
    ood_run: CalibratedRun, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(idx, "MNIST_FILES", ood_run.specs)
    output = tmp_path / "x.ckpt"
    args = ["calibrate", "--ckpt_path", str(ood_run.checkpoint), "--output", str(output), "--ood_keep_transformed"]
    assert exit_code(args) == 1
    assert "--ood_keep_transformed: this run neither augments nor distorts" in capsys.readouterr().err
    assert not output.exists()


def test_training_from_fitted_weights_resets_the_score() -> None:
    model = CompactCNN()
    model.ood.set("energy", -3.0)
    with pytest.warns(UserWarning, match="OOD score"):
        model.on_fit_start()
    assert not model.ood.fitted


def test_predict_step_gives_the_score_and_the_verdict() -> None:
    model = CompactCNN().eval()
    images, _ = synthetic_digits(6, seed=0)
    x = torch.from_numpy(images).float().div(255)[:, None]
    model.ood.set("max_softmax", -0.5)
    out = model.predict_step((x,), 0)
    torch.testing.assert_close(out["probabilities"], model(x).softmax(dim=1))
    torch.testing.assert_close(out["ood_score"], -out["probabilities"].amax(dim=1))
    assert torch.equal(out["not_digit"], out["ood_score"] > -0.5)


def odd_and_digits() -> np.ndarray:
    """Uniform noise (4), filled squares (4), then tiny-MNIST digits (6), N x 28 x 28 uint8."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, 28, 28)).astype(np.uint8)
    squares = np.zeros((4, 28, 28), np.uint8)
    for i, side in enumerate((8, 12, 16, 20)):
        squares[i, 14 - side // 2 : 14 + side // 2, 14 - side // 2 : 14 + side // 2] = 255
    digits, _ = synthetic_digits(6, seed=5)
    return np.concatenate([noise, squares, digits])


def test_predict_csv_and_classify_carry_the_score_and_the_verdict(
    ood_run: CalibratedRun, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt, images = ood_run.checkpoint, odd_and_digits()
    rows = predicted_rows(ckpt, images, tmp_path / "inputs.npy", figure=True)
    printed = capsys.readouterr().out
    assert list(rows[0])[4:7] == ["unsure", "not_digit", "ood_score"] and len(rows) == len(images)
    assert (runs("compact")[-1] / "figures" / "predictions.png").stat().st_size > 5000  # titled "not a digit" too
    seen = load_predict_inputs(str(tmp_path / "inputs.npy"), "never").images  # what predict prepared
    runner = TorchRunner(ckpt)
    _, expected = runner.predict(seen[:, None].astype(np.float32))
    scores = np.array([float(row["ood_score"]) for row in rows])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)  # the checkpoint's own score, per input
    assert runner.ood_threshold is not None
    assert [row["not_digit"] for row in rows] == [str(int(s > runner.ood_threshold)) for s in scores]
    assert all(row["not_digit"] == "1" for row in rows[:4])  # uniform noise: far from every tiny digit
    assert f"Not a digit: {sum(r['not_digit'] == '1' for r in rows)} of {len(rows)} (mahalanobis" in printed
    main(["classify", str(tmp_path / "inputs.npy"), "--ckpt_path", str(ckpt), "--invert", "never"])
    table = capsys.readouterr().out
    assert table.count("not a digit") == sum(r["not_digit"] == "1" for r in rows)
    main(["classify", str(tmp_path / "inputs.npy"), "--ckpt_path", str(ckpt), "--invert", "never", "--csv"])
    classified = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["not_digit"] for r in classified] == [r["not_digit"] for r in rows]


def test_serve_answers_not_digit_and_the_score(ood_run: CalibratedRun) -> None:
    from fastapi.testclient import TestClient

    from mnist_lit.serve.app import create_app

    runner = TorchRunner(ood_run.checkpoint)
    client = TestClient(create_app(runner))
    health = client.get("/api/health").json()
    assert health["ood_method"] == "mahalanobis" and health["ood_threshold"] == pytest.approx(runner.ood_threshold)
    images = odd_and_digits()
    for image in (images[0], images[-1]):
        answer, seen = post_png(client, image)
        _, expected = runner.predict(seen[None, None].astype(np.float32))
        assert answer["ood_score"] == pytest.approx(float(expected[0]), rel=1e-5)
        assert answer["not_digit"] is (answer["ood_score"] > runner.ood_threshold)
        assert answer["ood_method"] == "mahalanobis" and answer["ood_threshold"] == pytest.approx(runner.ood_threshold)


@pytest.fixture(scope="module")
def ood_onnx(ood_run: CalibratedRun) -> Path:
    """The calibrated checkpoint of :func:`ood_run`, exported to ONNX by ``export`` (which checks it)."""
    pytest.importorskip("onnxruntime")

    path = ood_run.root / "m.onnx"
    ckpt = ood_run.checkpoint
    main(["export", "--ckpt_path", str(ckpt), "--output", str(path), "--data_dir", "nowhere"])
    return path


def test_the_onnx_export_carries_the_score_and_its_threshold(
    ood_run: CalibratedRun, ood_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(idx, "MNIST_FILES", ood_run.specs)
    from mnist_lit.inference.onnx_runner import OnnxRunner

    ckpt = ood_run.checkpoint
    onnx, checkpoint = OnnxRunner(ood_onnx), TorchRunner(ckpt)
    assert onnx.has_score and onnx.ood_method == "mahalanobis"
    assert onnx.ood_threshold == pytest.approx(checkpoint.ood_threshold, rel=1e-7)
    images = odd_and_digits()
    pixels = np.concatenate([images[:, None], np.random.default_rng(1).integers(0, 256, (30, 1, 28, 28))])
    p_onnx, s_onnx = onnx.predict(pixels.astype(np.float32))
    p_torch, s_torch = checkpoint.predict(pixels.astype(np.float32))
    assert np.abs(p_onnx - p_torch).max() <= 1e-5
    assert (np.abs(s_onnx - s_torch) / np.maximum(1.0, np.abs(s_torch))).max() <= 1e-5
    assert np.array_equal(s_onnx > onnx.ood_threshold, s_torch > checkpoint.ood_threshold)  # the same verdicts
    main(["predict", "--config", COMPACT, "--ckpt_path", str(ood_onnx), "--data.data_dir",
          str(ood_run.data), *QUIET, "--predict_figure", "false"])  # fmt: skip
    rows = list(csv.DictReader(io.StringIO((runs("compact")[-1] / "predictions.csv").read_text())))
    assert rows and {"not_digit", "ood_score"} <= set(rows[0])


def test_an_export_whose_score_differs_is_refused_and_old_exports_score_max_softmax(
    ood_run: CalibratedRun,
    ood_onnx: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    onnx = pytest.importorskip("onnx")
    from mnist_lit.inference.onnx_runner import OnnxRunner

    ckpt = ood_run.checkpoint
    with monkeypatch.context() as patch:
        original = OnnxRunner.predict
        patch.setattr(
            OnnxRunner, "predict", lambda self, pixels: (original(self, pixels)[0], original(self, pixels)[1] + 1e-3)
        )
        args = ["export", "--ckpt_path", str(ckpt), "--output", str(tmp_path / "m.onnx"), "--data_dir", "nowhere"]
        assert exit_code(args) == 1
    assert "OOD score (mahalanobis)" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
    model = onnx.load(str(ood_onnx))
    del model.graph.output[1]  # as exported before the score existed
    onnx.save(model, str(tmp_path / "old.onnx"))
    old = OnnxRunner(tmp_path / "old.onnx")
    pixels = odd_and_digits()[:, None].astype(np.float32)
    probabilities, scores = old.predict(pixels)
    assert not old.has_score and old.ood_method == "max_softmax" and old.ood_threshold is None
    np.testing.assert_array_equal(scores, -probabilities.max(axis=1))


def test_a_keras_export_says_it_cannot_carry_the_score(
    ood_run: CalibratedRun, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")  # as in test_keras_interop: Keras runs on PyTorch here
    pytest.importorskip("keras")
    pytest.importorskip("h5py")

    ckpt = ood_run.checkpoint
    main(["export", "--ckpt_path", str(ckpt), "--output", str(tmp_path / "m.keras"), "--data_dir", "nowhere"])
    out = capsys.readouterr().out
    threshold = float(load_trained_network(ckpt).model.ood.threshold)
    assert f"cannot carry the OOD score (mahalanobis) nor its threshold ({threshold:.4g})" in out
    assert (tmp_path / "m.keras").is_file()


def test_a_checkpoint_from_before_the_score_predicts_with_no_verdict(ood_run: CalibratedRun, tmp_path: Path) -> None:
    checkpoint = torch.load(ood_run.checkpoint, map_location="cpu", weights_only=True)
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("ood.")}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    np.save(tmp_path / "inputs.npy", odd_and_digits())
    main(["predict", "--config", COMPACT, "--ckpt_path", str(tmp_path / "old.ckpt"), "--data.predict_path",
          str(tmp_path / "inputs.npy"), *QUIET, "--predict_figure", "false"])  # fmt: skip
    rows = list(csv.DictReader(io.StringIO((runs("compact")[-1] / "predictions.csv").read_text())))
    assert rows and all(row["not_digit"] == "0" for row in rows)  # loaded through Lightning's own strict load
    np.testing.assert_allclose(
        [float(r["ood_score"]) for r in rows], [-float(r["probability"]) for r in rows], atol=1e-6
    )


def test_fit_fits_the_score_alone_without_a_temperature(tiny_mnist) -> None:
    main(["fit", "--config", COMPACT, "--trainer.max_epochs", "1", *QUIET, *HELD_OUT, "--ood.method", "energy",
          "--test_after_fit", "false"])  # fmt: skip
    model = load_trained_network(runs("compact")[-1] / "checkpoints" / "calibrated.ckpt").model
    assert model.ood.method_name == "energy" and model.ood.fitted and float(model.temperature) == 1.0


def test_the_threshold_can_keep_the_share_of_the_transformed_validation_digits(
    tiny_mnist, capsys: pytest.CaptureFixture
) -> None:
    from mnist_lit.cli.calibrate import datamodule_for
    from mnist_lit.training.checkpoints import read_checkpoint
    from mnist_lit.training.ood import validation_outputs

    assert exit_code(["fit", "--config", COMPACT, *QUIET, *HELD_OUT, "--ood.method", "energy",
                      "--ood.keep_transformed", "true"]) == 1  # fmt: skip
    assert "--ood.keep_transformed true: this run neither augments nor distorts" in capsys.readouterr().err
    assert not Path("lightning_logs").exists()
    main(["fit", "--config", COMPACT, "--trainer.max_epochs", "1", *QUIET, *HELD_OUT, "--ood.method", "energy",
          "--ood.keep", "0.9", "--ood.keep_transformed", "true", "--data.distort.blur", "1.0",
          "--data.distort.low_resolution", "1.0", "--test_after_fit", "false"])  # fmt: skip
    ckpt = runs("compact")[-1] / "checkpoints" / "calibrated.ckpt"
    model = load_trained_network(ckpt).model
    datamodule = datamodule_for(read_checkpoint(ckpt), str(tiny_mnist.data_dir))
    datamodule.setup("fit")
    transformed = validation_outputs(model, datamodule, transformed=True)
    clean = validation_outputs(model, datamodule)
    assert len(transformed[0]) == 4 * len(clean[0])  # four draws of each validation digit
    kept = [int((model.ood(logits, f, model.temperature) <= model.ood.threshold).sum()) / len(logits)
            for logits, f in (transformed, clean)]  # fmt: skip
    assert 0.9 <= kept[0] < 0.9 + 2 / len(transformed[0])  # the share asked, of the blurred low-resolution digits
    assert kept[1] != kept[0]  # not that of the clean ones
