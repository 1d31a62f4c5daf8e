"""``export --output DIR/``: the model folder of every network gives its checkpoint's probabilities from each of its
files (safetensors through ``from_pretrained``, ``torch.export``, ONNX), needs no pickle, carries every buffer, has a
model card whose numbers are metrics.json's, refuses a changed file by name, and loads without Lightning."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mnist_lit.cli import main
from mnist_lit.cli.export import verification_images
from mnist_lit.data import idx
from mnist_lit.inference.torch_runner import PixelClassifier
from mnist_lit.training.checkpoints import load_trained_network
from tests.helpers import CONFIGS, REPO_ROOT, exit_code, make_tiny_mnist, refused, runs

pytest.importorskip("onnxruntime")
pytest.importorskip("safetensors")
pytest.importorskip("huggingface_hub")
from mnist_lit.inference.pretrained import load_pretrained
from mnist_lit.inference.pretrained_network import ModelFolderError, PretrainedNetwork
from mnist_lit.interop.model_folder import write_model_folder

NETWORKS = ("CompactCNN", "KerasReportCNN", "FastCNN", "AccurateCNN")
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false"]
#: Within this, every file's probabilities equal the checkpoint's (the export's own check allows 1e-5).
PARITY = 1e-6
BATCHES = (1, 257)


def saved_checkpoint(network: str, path: Path, normalization: str) -> Path:
    """A checkpoint of ``network`` as ``fit`` saves one (class path, hyperparameters, weights, the data module's
    normalization), its weights drawn at random and its batch norms' statistics set away from 0 and 1."""
    import mnist_lit.models

    torch.manual_seed(0)
    model = getattr(mnist_lit.models, network)()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": {"_class_path": f"mnist_lit.models.{network}", **model.hparams},
            "MNISTDataModule": {"normalization": normalization},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint of each network: the compact one from a tiny ``fit`` and test (so that its run folder has a
    metrics.json), calibrated by hand (T = 1.7, unsure under 0.4); the others saved as ``fit`` would, untrained."""
    root = tmp_path_factory.mktemp("fit")
    tiny = make_tiny_mnist(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(idx, "MNIST_FILES", tiny.specs)
        patch.chdir(root)
        main(["fit", "--config", str(CONFIGS / "compact.yaml"), *SHORT])
    made = {"CompactCNN": (root / "lightning_logs/compact/version_0/checkpoints/last.ckpt").resolve()}
    checkpoint = torch.load(made["CompactCNN"], weights_only=False)
    checkpoint["state_dict"]["temperature"] = torch.tensor(1.7)
    checkpoint["state_dict"]["unsure_threshold"] = torch.tensor(0.4)
    torch.save(checkpoint, made["CompactCNN"])
    for network, normalization in (("KerasReportCNN", "unit"), ("FastCNN", "unit"), ("AccurateCNN", "standardize")):
        made[network] = saved_checkpoint(network, root / f"{network}.ckpt", normalization)
    return made


@pytest.fixture(scope="module")
def folders(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each checkpoint exported as a model folder (checked on synthetic images: no MNIST where the tests run)."""
    out = tmp_path_factory.mktemp("folders")
    for network, ckpt in checkpoints.items():
        main(["export", "--ckpt_path", str(ckpt), "--output", f"{out / network}/", "--data_dir", "nowhere"])
    return {network: out / network for network in checkpoints}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return verification_images(Path("nowhere"), 300)[0].astype(np.float32)


def checkpoint_probabilities(ckpt: Path, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return PixelClassifier.of(load_trained_network(ckpt))(torch.from_numpy(images)).numpy()


@pytest.mark.parametrize("network", NETWORKS)
def test_every_file_of_the_folder_gives_the_checkpoints_probabilities(
    checkpoints: dict[str, Path], folders: dict[str, Path], images: np.ndarray, network: str
) -> None:
    import onnxruntime as ort

    folder = folders[network]
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "SHA256SUMS", "config.json", "model.onnx", "model.pt2", "model.safetensors",
    ]  # fmt: skip
    expected = checkpoint_probabilities(checkpoints[network], images)
    mixin = PretrainedNetwork.from_pretrained(folder)
    pretrained = load_pretrained(folder)
    program = torch.export.load(folder / "model.pt2").module()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert pretrained.network_name == network and isinstance(pretrained.module, PretrainedNetwork)
    for batch in BATCHES:
        x = images[:batch]
        with torch.inference_mode():
            found = {
                "from_pretrained": mixin(torch.from_numpy(x)).numpy(),
                "load_pretrained": pretrained.predict(x, preprocess=False).probabilities,
                "model.pt2": program(torch.from_numpy(x))[0].numpy(),
                "model.onnx": session.run(None, {"image": x})[0],
            }
        for name, probabilities in found.items():
            assert probabilities.shape == (batch, 10)
            assert np.abs(probabilities - expected[:batch]).max() <= PARITY, (name, batch)


def strict_json(text: str) -> object:
    """``json.loads`` that refuses Python's ``Infinity``/``NaN`` (not standard JSON; other parsers reject them)."""

    def refuse(name: str) -> None:
        raise ValueError(f"not standard JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_config_carries_the_network_its_preprocessing_and_every_buffer(folders: dict[str, Path]) -> None:
    config = strict_json((folders["CompactCNN"] / "config.json").read_text())
    assert isinstance(config, dict)
    assert config["network"] == "CompactCNN"
    assert config["network_args"] == {"filters": [8, 16], "dense_units": 100, "conv_dropout": 0.2, "dense_dropout": 0.5}
    contract = config["preprocessing"]
    assert contract["normalization"]["name"] == "unit" and contract["image_side"] == 28
    assert contract["scalar_buffers"] == {
        "temperature": pytest.approx(1.7),
        "unsure_threshold": pytest.approx(0.4),
        "ood.threshold": None,
    }  # fmt: skip  (unfitted: inf in the weights, null in standard JSON)
    assert contract["ood_score"]["method"] == "max_softmax" and contract["ood_score"]["threshold"] is None
    ood = {"ood.method", "ood.threshold", "ood.class_means", "ood.whitening"}  # the OOD score's (unfitted here)
    assert set(config["buffers"]) == {"temperature", "unsure_threshold", *ood}
    pretrained = load_pretrained(folders["CompactCNN"])
    assert pretrained.unsure_threshold == pytest.approx(0.4)
    assert pretrained.ood_method == "max_softmax" and pretrained.ood_threshold is None
    assert "Not a digit: no threshold was fitted" in (folders["CompactCNN"] / "README.md").read_text()


def test_a_folder_that_wrote_infinity_still_loads(folders: dict[str, Path], tmp_path: Path) -> None:
    """Folders exported before the threshold was written as null have ``Infinity`` in config.json."""
    from mnist_lit.inference.pretrained_network import write_checksums

    folder = shutil.copytree(folders["CompactCNN"], tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    config["preprocessing"]["scalar_buffers"]["ood.threshold"] = float("inf")
    del config["preprocessing"]["ood_score"]
    (folder / "config.json").write_text(json.dumps(config))
    assert "Infinity" in (folder / "config.json").read_text()
    write_checksums(folder)
    pretrained = load_pretrained(folder)
    assert pretrained.ood_method == "max_softmax" and pretrained.ood_threshold is None
    assert not pretrained.predict(np.zeros((2, 28, 28), np.uint8), preprocess=False).not_digit.any()


def test_a_buffer_the_checkpoint_adds_later_travels_in_the_folder(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """Buffers beside temperature (say, a drift detector's statistics and a threshold) need no change here."""
    trained = load_trained_network(checkpoints["FastCNN"])
    trained.model.register_buffer("drift_threshold", torch.tensor(-3.25))
    trained.model.register_buffer("drift_mean", torch.arange(10, dtype=torch.float32))
    images = verification_images(Path("nowhere"), 20)[0]
    write_model_folder(trained, tmp_path / "m", images, 1e-5, None, "none")
    network = PretrainedNetwork.from_pretrained(tmp_path / "m")
    assert float(network.drift_threshold) == -3.25 and torch.equal(network.drift_mean, torch.arange(10.0))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["buffers"]["drift_mean"] == {"shape": [10], "dtype": "float32"}
    assert config["preprocessing"]["scalar_buffers"]["drift_threshold"] == -3.25


def test_nothing_in_the_folder_needs_pickle(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, images: np.ndarray
) -> None:
    from safetensors.torch import load_file

    folder = folders["AccurateCNN"]
    calls: list[object] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", spy)
    assert {k for k in load_file(folder / "model.safetensors") if k.startswith("net.")}
    program = torch.export.load(folder / "model.pt2").module()
    load_pretrained(folder)
    assert calls and all(flag is True for flag in calls)  # the .pt2's sample inputs; its weights are raw bytes
    assert [out.shape for out in program(torch.from_numpy(images[:3]))] == [(3, 10), (3,)]  # probabilities, score


def test_the_card_header_parses_and_its_numbers_are_metrics_json(
    checkpoints: dict[str, Path], folders: dict[str, Path]
) -> None:
    from huggingface_hub import ModelCard

    metrics = json.loads((checkpoints["CompactCNN"].parents[1] / "metrics.json").read_text())
    text = (folders["CompactCNN"] / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["license"] == "mit" and header["library_name"] == "mnist_lit"
    assert header["datasets"] == ["ylecun/mnist"] and "mnist" in header["tags"]
    results = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    assert results["accuracy"] == metrics["test_acc"] and results["loss"] == metrics["test_loss"]
    assert results["mae"] == metrics["geometric"]["mae"] and results["mse"] == metrics["geometric"]["mse"]
    assert results["ece"] == metrics["calibration"]["ece"]
    assert set(header["metrics"]) == set(results)
    assert ModelCard.load(folders["CompactCNN"] / "README.md").data.license == "mit"
    wrong = round((1 - metrics["test_acc"]) * metrics["num_samples"])
    assert f"It gets {wrong:,} of the {metrics['num_samples']:,} MNIST test digits wrong" in text
    assert "```yaml" in text and "CompactCNN" in text  # the training config, as run
    assert "model-index" not in (folders["FastCNN"] / "README.md").read_text()  # no metrics.json: nothing claimed


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "model.onnx", "README.md"])
def test_a_changed_file_is_refused_by_name(folders: dict[str, Path], tmp_path: Path, name: str) -> None:
    folder = shutil.copytree(folders["CompactCNN"], tmp_path / "copy")
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    for load in (load_pretrained, PretrainedNetwork.from_pretrained):
        with pytest.raises(ModelFolderError, match=rf"{folder / name}: its SHA-256 is not the one SHA256SUMS records"):
            load(folder)
    (folder / name).unlink()
    with pytest.raises(ModelFolderError, match=rf"{folder / name}: missing"):
        load_pretrained(folder)


def test_load_pretrained_on_a_folder_or_an_onnx_file_does_not_import_lightning(folders: dict[str, Path]) -> None:
    folder = folders["CompactCNN"]
    script = (
        "import sys, numpy as np, mnist_lit\n"
        "for path in sys.argv[1:]:\n"
        "    model = mnist_lit.load_pretrained(path)\n"
        "    result = model.predict(np.full((2, 28, 28), 30, np.uint8) + np.eye(28, dtype=np.uint8) * 200)\n"
        "    assert result.probabilities.shape == (2, 10) and result.digits.shape == (2,)\n"
        "    print(type(model.module).__name__)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
    )
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    for paths, modules in (([str(folder)], "PretrainedNetwork"), ([str(folder / "model.onnx")], "NoneType")):
        done = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [modules, "[]"]


def test_predict_classify_and_serve_take_a_model_folder(
    checkpoints: dict[str, Path], folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from PIL import Image

    image = np.zeros((40, 40), np.uint8)
    image[8:32, 18:23] = 255
    Image.fromarray(image).save(tmp_path / "one.png")
    folder = folders["CompactCNN"]
    expected = load_pretrained(checkpoints["CompactCNN"]).predict(tmp_path / "one.png").probabilities[0]
    assert np.abs(load_pretrained(folder).predict(str(tmp_path / "one.png")).probabilities[0] - expected).max() < 1e-6
    main(["classify", "--ckpt_path", str(folder), "--csv", str(tmp_path / "one.png")])
    row = capsys.readouterr().out.splitlines()[1].split(",")
    assert int(row[1]) == int(expected.argmax())
    predict = ["predict", "--config", str(CONFIGS / "compact.yaml"), "--ckpt_path", str(folder)]
    main([*predict, "--data.predict_path", str(tmp_path / "one.png"), "--trainer.enable_progress_bar", "false"])
    written = (runs("compact")[-1] / "predictions.csv").read_text().splitlines()
    assert f"{float(expected.max()):.4f}"[:5] in written[1] and written[1].split(",")[1] == str(int(expected.argmax()))
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mnist_lit.inference.runners import load_runner
    from mnist_lit.serve.app import create_app

    with TestClient(create_app(load_runner(folder))) as client:
        health = client.get("/api/health").json()
    assert health["network"] == "CompactCNN" and health["checkpoint"] == "model.safetensors" and health["sha256"]


def test_a_failed_check_leaves_nothing_and_a_folder_of_other_things_is_never_replaced(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist_lit.cli.export as export

    ckpt = str(checkpoints["FastCNN"])
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no file can pass: the check must remove everything
    err = refused(["export", "--ckpt_path", ckpt, "--output", f"{tmp_path / 'm'}/", "--data_dir", "nowhere"],
                  capsys, tmp_path / "m")  # fmt: skip
    assert "differ from the checkpoint" in err and "Nothing was written" in err
    assert list(tmp_path.iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert exit_code(["export", "--ckpt_path", ckpt, "--output", str(mine), "--overwrite"]) == 1
    assert "not a model folder" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"


@pytest.fixture(scope="module")
def fitted(checkpoints: dict[str, Path], images: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The compact checkpoint (T = 1.7) with a fitted "not a digit" score (``mahalanobis_normalized``: the feature
    path; statistics and threshold fitted by hand on the check images, so that half of them are "not a digit"),
    exported once as a model folder."""
    from mnist_lit.models.ood import mahalanobis_statistics, unit_length

    root = tmp_path_factory.mktemp("fitted")
    checkpoint = torch.load(checkpoints["CompactCNN"], weights_only=False)
    model = load_trained_network(checkpoints["CompactCNN"]).model.eval()
    with torch.no_grad():
        x = torch.from_numpy(images) / 255.0  # the compact network's normalization is "unit"
        means, whitening = mahalanobis_statistics(unit_length(model.features(x)), torch.arange(len(x)) % 10)
        model.ood.set("mahalanobis_normalized", 0.0, means, whitening)
        scores = model.logits_and_ood_score(x)[1].sort().values
        middle = len(scores) // 2  # halfway between two scores: no image sits on the threshold
        model.ood.set("mahalanobis_normalized", float(scores[middle - 1 : middle + 1].mean()), means, whitening)
    checkpoint["state_dict"] = model.state_dict()
    ckpt = root / "fitted.ckpt"
    torch.save(checkpoint, ckpt)
    main(["export", "--ckpt_path", str(ckpt), "--output", f"{root / 'folder'}/", "--data_dir", "nowhere"])
    return {"ckpt": ckpt, "folder": root / "folder", "threshold": float(model.ood.threshold)}


def test_a_fitted_folder_gives_the_checkpoints_scores_and_verdicts_from_every_file(
    fitted: dict, images: np.ndarray
) -> None:
    import onnxruntime as ort

    from mnist_lit.inference.torch_runner import TorchRunner

    folder, checkpoint = fitted["folder"], TorchRunner(fitted["ckpt"])
    assert checkpoint.ood_method == "mahalanobis_normalized" and checkpoint.ood_threshold == fitted["threshold"]
    pixels = np.concatenate([images, np.random.default_rng(1).integers(0, 256, (20, 1, 28, 28)).astype(np.float32)])
    p_expected, s_expected = checkpoint.predict(pixels)
    verdicts = s_expected > checkpoint.ood_threshold
    assert 0 < verdicts.sum() < len(pixels)  # both verdicts occur, so a wrong one is seen
    program = torch.export.load(folder / "model.pt2").module()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        p_program, s_program = (t.numpy() for t in program(torch.from_numpy(pixels)))
    found = {"model.pt2": (p_program, s_program), "model.onnx": tuple(session.run(None, {"image": pixels}))}
    for path in (folder, fitted["ckpt"], folder / "model.onnx"):
        model = load_pretrained(path)
        assert (model.ood_method, model.ood_threshold) == ("mahalanobis_normalized", pytest.approx(fitted["threshold"]))
        result = model.predict(pixels, preprocess=False)
        found[f"load_pretrained({path.name})"] = (result.probabilities, result.ood_scores)
        assert np.array_equal(result.not_digit, verdicts), path
    for name, (probabilities, scores) in found.items():
        assert np.abs(probabilities - p_expected).max() <= PARITY, name
        assert (np.abs(scores - s_expected) / np.maximum(1.0, np.abs(s_expected))).max() <= 1e-5, name
        assert np.array_equal(scores > fitted["threshold"], verdicts), name
    config = strict_json((folder / "config.json").read_text())
    assert isinstance(config, dict)
    assert config["preprocessing"]["ood_score"]["method"] == "mahalanobis_normalized"
    assert config["preprocessing"]["ood_score"]["threshold"] == pytest.approx(fitted["threshold"])
    card = (folder / "README.md").read_text()
    assert "the mahalanobis_normalized score" in card and f"above {fitted['threshold']:.6g}" in card


def test_a_fitted_folder_as_ckpt_path_gives_the_checkpoints_not_digit(
    fitted: dict, images: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import csv
    import io

    pixels = images[:12, 0].astype(np.uint8)
    np.save(tmp_path / "inputs.npy", pixels)
    rows = {}
    for name, path in (("folder", fitted["folder"]), ("ckpt", fitted["ckpt"])):
        main(["classify", str(tmp_path / "inputs.npy"), "--ckpt_path", str(path), "--invert", "never", "--csv"])
        rows[name] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["not_digit"] for r in rows["folder"]] == [r["not_digit"] for r in rows["ckpt"]]
    assert {r["not_digit"] for r in rows["ckpt"]} == {"0", "1"}
    np.testing.assert_allclose([float(r["ood_score"]) for r in rows["folder"]],
                               [float(r["ood_score"]) for r in rows["ckpt"]], rtol=1e-5)  # fmt: skip
    main(["predict", "--config", str(CONFIGS / "compact.yaml"), "--ckpt_path", str(fitted["folder"]),
          "--data.predict_path", str(tmp_path / "inputs.npy"), "--data.predict_invert", "never",
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    predicted = list(csv.DictReader(io.StringIO((runs("compact")[-1] / "predictions.csv").read_text())))
    assert [r["not_digit"] for r in predicted] == [r["not_digit"] for r in rows["ckpt"]]
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mnist_lit.inference.runners import load_runner
    from mnist_lit.serve.app import create_app

    with TestClient(create_app(load_runner(fitted["folder"]))) as client:
        health = client.get("/api/health").json()
    assert health["ood_method"] == "mahalanobis_normalized"
    assert health["ood_threshold"] == pytest.approx(fitted["threshold"])


def test_a_folder_whose_score_differs_is_refused(
    fitted: dict, images: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_lit.interop.model_folder import ModelFolderExportError

    real = PretrainedNetwork.scored

    def off(self: PretrainedNetwork, pixels: torch.Tensor, method: str | None = None) -> tuple:
        probabilities, scores = real(self, pixels, method)
        return probabilities, scores + 1e-3

    monkeypatch.setattr(PretrainedNetwork, "scored", off)
    with pytest.raises(ModelFolderExportError, match=r"OOD scores \(mahalanobis_normalized\) differ"):
        write_model_folder(load_trained_network(fitted["ckpt"]), tmp_path / "m", images[:20], 1e-5, None, "none")
    assert list(tmp_path.iterdir()) == []
