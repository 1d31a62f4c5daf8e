"""Keras <-> mnist_lit: the notebooks' Keras models, built and saved by Keras itself (on the PyTorch backend, no
TensorFlow), imported in all three file formats and exported back, with the same predictions; and every bad input."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnist_lit.cli import main
from mnist_lit.inference.torch_runner import PixelClassifier, TorchRunner
from mnist_lit.interop import keras as mapping
from mnist_lit.interop.keras import writing
from mnist_lit.models import CompactCNN, KerasReportCNN
from mnist_lit.models.base import MNISTClassifier
from tests.helpers import CONFIGS, exit_code, refused, runs, synthetic_digits

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is first imported; Keras runs on PyTorch here
keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

FORMATS = ("keras", "h5", "weights.h5")
TOLERANCE = 1e-5
N_IMAGES = 1000


def notebook_a(activation: str = "relu", pooling: str = "max", dense_units: int = 128) -> Any:
    """Notebook A's model, as its Keras code builds it (the keyword arguments make near-misses for the tests)."""
    layers = keras.layers
    pool = layers.MaxPooling2D if pooling == "max" else layers.AveragePooling2D
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation=activation), pool((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), pool((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dense(dense_units, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])  # fmt: skip


def notebook_b() -> Any:
    """Notebook B's model, as its Keras code builds it."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(8, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)), layers.Dropout(0.2),
        layers.Conv2D(16, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)), layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(100, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])  # fmt: skip


NETWORKS = {"keras_report": (KerasReportCNN, notebook_a), "compact": (CompactCNN, notebook_b)}


def compile_as_notebooks(model: Any) -> Any:
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def read_idx_gz(path: Path, offset: int) -> np.ndarray:
    return np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=offset).copy()


def keras_predict(model: Any, images: np.ndarray) -> np.ndarray:
    """Keras' probabilities for N x 1 x 28 x 28 raw pixels, fed as the notebooks fed them: / 255, channels last."""
    x = images.transpose(0, 2, 3, 1).astype(np.float32) / 255
    return np.asarray(model.predict(x, batch_size=len(x), verbose=0))


def quickly_trained(cls: type[MNISTClassifier], images: np.ndarray, labels: np.ndarray, steps: int = 60) -> Any:
    """A network of ``cls`` after ``steps`` Adam steps on real images: confident, varied predictions, unlike a
    freshly initialized network's near-uniform ones, which would make the comparisons weak."""
    torch.manual_seed(0)
    model = cls()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(images).float() / 255, torch.from_numpy(labels).long()
    for step in range(steps):
        batch = slice(step * 64 % len(x), step * 64 % len(x) + 64)
        optimizer.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return model.eval()


@dataclass
class NotebookModel:
    """A notebook's Keras model with trained weights, saved by Keras in the three formats."""

    name: str
    config: Path
    keras_model: Any
    files: dict[str, Path]
    keras_probs: np.ndarray


@pytest.fixture(scope="module")
def test_images(real_raw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first 1,000 real MNIST test images (N x 1 x 28 x 28 uint8) and their labels."""
    images = read_idx_gz(real_raw_dir / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = read_idx_gz(real_raw_dir / "t10k-labels-idx1-ubyte.gz", 8)
    return images[:N_IMAGES], labels[:N_IMAGES]


@pytest.fixture(scope="module")
def notebook_models(
    real_raw_dir: Path, test_images: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, NotebookModel]:
    """Both notebooks' Keras models (their own Keras code), given weights trained briefly in PyTorch, and saved by
    Keras as ``.keras``, legacy ``.h5`` and ``.weights.h5``. Where the weights come from does not matter to the
    tests: whatever Keras holds, the import must predict what Keras predicts."""
    folder = tmp_path_factory.mktemp("keras_files")
    train_x = read_idx_gz(real_raw_dir / "train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)[:7680]
    train_y = read_idx_gz(real_raw_dir / "train-labels-idx1-ubyte.gz", 8)[:7680]
    models = {}
    for name, (cls, build) in NETWORKS.items():
        net = quickly_trained(cls, train_x, train_y).net
        model = compile_as_notebooks(build())
        weighted = [layer for layer in model.layers if layer.weights]
        for layer, arrays in zip(weighted, mapping.network_to_keras_weights(net), strict=True):
            layer.set_weights(arrays)
        files = {fmt: folder / f"{name}.{fmt}" for fmt in FORMATS}
        model.save(files["keras"])
        model.save(files["h5"])
        model.save_weights(files["weights.h5"])
        probs = keras_predict(model, test_images[0])
        models[name] = NotebookModel(name, CONFIGS / f"{name}.yaml", model, files, probs)
    return models


def import_keras(model_file: Path, config: Path, output: Path, *extra: str) -> Path:
    main(["import-keras", str(model_file), "--config", str(config), "--output", str(output), *extra])
    return output


# --- the mapping itself (no Keras needed) ---------------------------------------------------------------------------


def test_conv_and_dense_mappings_are_inverse_and_flatten_orders_agree() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 8, 16)).astype(np.float32)
    assert mapping.conv_kernel_to_torch(kernel).shape == (16, 8, 3, 3)
    np.testing.assert_array_equal(mapping.conv_kernel_to_keras(mapping.conv_kernel_to_torch(kernel)), kernel)
    # A feature map of 4 channels of 3 x 2: Keras flattens it channels last, PyTorch channels first.
    chw = rng.normal(size=(4, 3, 2)).astype(np.float32)
    dense = rng.normal(size=(24, 5)).astype(np.float32)
    keras_out = chw.transpose(1, 2, 0).reshape(-1) @ dense
    weight = mapping.dense_kernel_to_torch(dense, flatten_chw=(4, 3, 2))
    np.testing.assert_allclose(weight @ chw.reshape(-1), keras_out, rtol=1e-5)
    np.testing.assert_array_equal(mapping.dense_kernel_to_keras(weight, flatten_chw=(4, 3, 2)), dense)
    assert not np.allclose(mapping.dense_kernel_to_torch(dense) @ chw.reshape(-1), keras_out, rtol=1e-3)


def test_weighted_layers_know_what_each_flatten_flattens() -> None:
    layers = mapping.weighted_layers(KerasReportCNN().net)
    assert [(layer.kind, layer.flatten_chw) for layer in layers] == [
        ("conv", None), ("conv", None), ("conv", None), ("dense", (64, 3, 3)), ("dense", None),
    ]  # fmt: skip
    assert mapping.weighted_layers(CompactCNN().net)[2].flatten_chw == (16, 5, 5)


# --- import: Keras files to checkpoints -----------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", NETWORKS)
def test_an_imported_model_predicts_what_keras_predicts(
    notebook_models: dict[str, NotebookModel], test_images: tuple[np.ndarray, np.ndarray], name: str, fmt: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    notebook = notebook_models[name]
    checkpoint = import_keras(notebook.files[fmt], notebook.config, tmp_path / "imported.ckpt")
    runner = TorchRunner(checkpoint)
    probs = runner.probabilities(test_images[0])
    assert runner.network_name == NETWORKS[name][0].__name__
    assert np.abs(probs - notebook.keras_probs).max() <= TOLERANCE
    np.testing.assert_array_equal(probs.argmax(axis=1), notebook.keras_probs.argmax(axis=1))
    assert (probs.argmax(axis=1) == test_images[1]).mean() > 0.8  # trained weights: a real test of the mapping


@pytest.mark.real_data
def test_the_checkpoint_is_an_ordinary_one(notebook_models: dict[str, NotebookModel], tmp_path: Path) -> None:
    checkpoint = torch.load(
        import_keras(notebook_models["compact"].files["keras"], CONFIGS / "compact.yaml", tmp_path / "c.ckpt"),
        weights_only=True,
    )
    hparams = checkpoint["hyper_parameters"]
    assert hparams["_class_path"] == "mnist_lit.models.CompactCNN"
    assert hparams["_instantiator"] == "lightning.pytorch.cli.instantiate_module"
    assert (hparams["filters"], hparams["dense_units"]) == ([8, 16], 100)
    assert checkpoint["MNISTDataModule"] == {"normalization": "unit"}
    assert set(checkpoint["state_dict"]) == set(CompactCNN().state_dict())


@pytest.mark.real_data
def test_a_broken_flatten_mapping_would_be_caught(
    notebook_models: dict[str, NotebookModel], test_images: tuple[np.ndarray, np.ndarray], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Without the re-ordering of the first dense layer, the model loads without error and predicts nonsense."""

    def transpose_only(kernel: np.ndarray, flatten_chw: tuple | None = None) -> np.ndarray:
        return np.ascontiguousarray(kernel.T)

    monkeypatch.setattr(mapping.mapping, "dense_kernel_to_torch", transpose_only)
    notebook = notebook_models["keras_report"]
    probs = TorchRunner(import_keras(notebook.files["keras"], notebook.config, tmp_path / "x.ckpt")).probabilities(
        test_images[0]
    )
    assert np.abs(probs - notebook.keras_probs).max() > 0.1


@pytest.mark.real_data
@pytest.mark.slow
def test_test_reports_the_accuracy_keras_evaluate_reports(
    notebook_models: dict[str, NotebookModel], real_raw_dir: Path, tmp_path: Path
) -> None:
    notebook = notebook_models["compact"]
    checkpoint = import_keras(notebook.files["h5"], notebook.config, tmp_path / "compact.ckpt")
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in real_raw_dir.glob("*.gz"):
        (raw / gz.name).symlink_to(gz)
    main([
        "test", "--config", str(notebook.config), "--ckpt_path", str(checkpoint), "--data.download", "false",
        "--trainer.enable_progress_bar", "false", "--predictions.save_figure", "false",
    ])  # fmt: skip
    report = json.loads((runs("compact")[-1] / "metrics.json").read_text())
    images = read_idx_gz(real_raw_dir / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = read_idx_gz(real_raw_dir / "t10k-labels-idx1-ubyte.gz", 8)
    _, keras_accuracy = notebook.keras_model.evaluate(
        images.transpose(0, 2, 3, 1) / 255, keras.utils.to_categorical(labels, 10), batch_size=1000, verbose=0
    )
    assert report["num_samples"] == 10_000
    assert report["test_acc"] == pytest.approx(keras_accuracy, abs=1e-6)  # the same count of right answers


@pytest.mark.real_data
def test_fit_starts_from_the_imported_weights(notebook_models: dict[str, NotebookModel], tiny_mnist, tmp_path) -> None:
    checkpoint = import_keras(notebook_models["compact"].files["keras"], CONFIGS / "compact.yaml", tmp_path / "c.ckpt")
    main([
        "fit", "--config", str(CONFIGS / "compact.yaml"), "--init_weights", str(checkpoint),
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
        "--model.init_args.lr", "1e-12",
    ])  # fmt: skip
    fitted = sorted(runs("compact")[-1].glob("checkpoints/*.ckpt"))
    before = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert fitted
    for path in fitted:  # a learning rate of 1e-12 leaves the imported weights where they were
        after = torch.load(path, weights_only=True)["state_dict"]
        for key, value in before.items():
            torch.testing.assert_close(after[key], value, atol=1e-6, rtol=0)


def test_import_needs_no_keras_and_no_tensorflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .weights.h5 written with h5py in Keras 3's layout; Keras and TensorFlow made unimportable."""
    torch.manual_seed(0)
    net = CompactCNN().net
    path = tmp_path / "compact.weights.h5"
    with h5py.File(path, "w") as h5:
        names = ["conv2d", "conv2d_1", "dense", "dense_1"]  # Keras 3's names: the class's, numbered
        for name, (kernel, bias) in zip(names, mapping.network_to_keras_weights(net), strict=True):
            group = h5.create_group(f"layers/{name}/vars")
            group["0"], group["1"] = kernel, bias
    monkeypatch.setitem(sys.modules, "keras", None)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    checkpoint = import_keras(path, CONFIGS / "compact.yaml", tmp_path / "c.ckpt")
    images = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28)).astype(np.float32)
    expected = PixelClassifier(net, "unit").eval()(torch.from_numpy(images)).detach().numpy()
    np.testing.assert_allclose(TorchRunner(checkpoint).probabilities(images), expected, atol=1e-6)


# --- export: checkpoints to Keras files -----------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
@pytest.mark.parametrize("name", NETWORKS)
def test_an_exported_model_predicts_in_keras_what_the_checkpoint_predicts(
    notebook_models: dict[str, NotebookModel], test_images: tuple[np.ndarray, np.ndarray], real_raw_dir: Path,
    name: str, suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    notebook = notebook_models[name]
    checkpoint = import_keras(notebook.files["keras"], notebook.config, tmp_path / "start.ckpt")
    state = torch.load(checkpoint, weights_only=True)
    generator = torch.Generator().manual_seed(1)
    for value in state["state_dict"].values():  # weights of its own, not the Keras file's any more
        if value.is_floating_point():  # not the OOD score's method code
            value.mul_(1 + 0.1 * torch.randn(value.shape, generator=generator))
    torch.save(state, checkpoint)
    output = tmp_path / f"exported{suffix}"
    main(["export", "--ckpt_path", str(checkpoint), "--output", str(output), "--data_dir", str(tmp_path / "none")])
    assert "max |Δp|" in capsys.readouterr().out
    if suffix == ".keras":
        model = keras.saving.load_model(output)
    else:  # the notebook's own Sequential, as its code builds it, then load_weights
        model = compile_as_notebooks(NETWORKS[name][1]())
        model.load_weights(output)
    probs = keras_predict(model, test_images[0])
    expected = TorchRunner(checkpoint).probabilities(test_images[0])
    assert np.abs(probs - expected).max() <= TOLERANCE
    np.testing.assert_array_equal(probs.argmax(axis=1), expected.argmax(axis=1))
    assert np.abs(probs - notebook.keras_probs).max() > 1e-3  # the perturbed weights, not the original ones


# --- export: a .keras file that Keras on every backend loads --------------------------------------------------------

#: Loads a .keras file with a plain ``keras.models.load_model`` in a fresh process without torch (as a TensorFlow or
#: JAX environment is), predicts, and with ``fit``, trains one batch on from the file's compile settings.
#: torch is refused by an import hook rather than ``sys.modules["torch"] = None``, which libraries that look torch up
#: there (scikit-learn's array API helpers, imported by Keras when installed) take for a broken torch.
#: The fit step is seeded, and on images at a ninth of their intensity. The exported network is made confident (its
#: weights tripled); in training mode dropout scales its logits up further, and Keras' cross-entropy clips each
#: probability to [1e-7, 1 - 1e-7], where its gradient is zero: with unseeded dropout about one draw in 70 saturated
#: all 16 images, the gradient was exactly zero, Adam moved nothing, and the test failed with "0 of 8 weights
#: changed". At a ninth of the intensity (zero biases: the logits scale with it) no image saturates in 200 draws.
#: The weights are copied before the step: on the JAX backend ``convert_to_numpy`` can be a view of the device
#: buffer, which the jitted step donates.
LOAD_WITHOUT_TORCH = """
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
import keras
import numpy as np
model_path, images_path, out_path, fit = sys.argv[1:5]
keras.utils.set_random_seed(0)  # before loading: each Dropout layer draws its seed when it is built
model = keras.models.load_model(model_path)
x = np.load(images_path).transpose(0, 2, 3, 1).astype(np.float32) / 255
np.save(out_path, np.asarray(model.predict(x, batch_size=len(x), verbose=0)))
report = {"backend": keras.backend.backend(), "optimizer": type(model.optimizer).__module__}
if fit == "fit":
    snapshot = lambda: [np.array(keras.ops.convert_to_numpy(w), copy=True) for w in model.trainable_weights]
    before = snapshot()
    history = model.fit(x[:16] / 9, keras.utils.to_categorical(np.arange(16) % 10, 10), batch_size=16, verbose=0)
    after = snapshot()
    report.update(loss=history.history["loss"][0], steps=int(model.optimizer.iterations), weights=len(after),
                  changed=sum(not np.array_equal(a, b) for a, b in zip(before, after)))
print(json.dumps(report))
"""


@dataclass
class ExportedModel:
    checkpoint: Path
    keras_file: Path
    images: np.ndarray
    probs: np.ndarray


@pytest.fixture(scope="module")
def exported_compact(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    """A CompactCNN checkpoint with confident predictions (its initial weights tripled), made with import-keras,
    exported to .keras, and its own probabilities for 64 synthetic digits. No real data needed."""
    folder = tmp_path_factory.mktemp("export_compact")
    torch.manual_seed(0)
    net = CompactCNN().net
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.mul_(3)
    model = compile_as_notebooks(notebook_b())
    weighted = [layer for layer in model.layers if layer.weights]
    for layer, arrays in zip(weighted, mapping.network_to_keras_weights(net), strict=True):
        layer.set_weights(arrays)
    model.save_weights(folder / "start.weights.h5")
    checkpoint = import_keras(folder / "start.weights.h5", CONFIGS / "compact.yaml", folder / "compact.ckpt")
    keras_file = folder / "compact.keras"
    main(["export", "--ckpt_path", str(checkpoint), "--output", str(keras_file), "--data_dir", str(folder / "none")])
    images = synthetic_digits(64, seed=2)[0].reshape(-1, 1, 28, 28)
    return ExportedModel(checkpoint, keras_file, images, TorchRunner(checkpoint).probabilities(images))


def json_strings(value: Any) -> list[str]:
    """Every key and string value in a JSON document."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *json_strings(item)]]
    if isinstance(value, list):
        return [text for item in value for text in json_strings(item)]
    return []


def test_an_exported_keras_file_names_no_backend_and_compiles_as_the_notebooks(exported_compact) -> None:
    with zipfile.ZipFile(exported_compact.keras_file) as archive:
        config, metadata = (json.loads(archive.read(name)) for name in ("config.json", "metadata.json"))
    strings = json_strings(config) + json_strings(metadata)
    assert strings and not [text for text in strings if "keras.src.backend" in text or "torch" in text.lower()]
    compiled = config["compile_config"]
    assert {key: compiled["optimizer"][key] for key in ("module", "class_name", "registered_name")} == {
        "module": "keras.optimizers", "class_name": "Adam", "registered_name": None,
    }  # fmt: skip
    settings = compiled["optimizer"]["config"]
    assert (settings["beta_1"], settings["beta_2"], settings["epsilon"]) == (0.9, 0.999, 1e-7)
    assert settings["learning_rate"] == pytest.approx(1e-3)
    assert (compiled["loss"], compiled["metrics"]) == ("categorical_crossentropy", ["accuracy"])


# Keras 3.15's numpy backend imports parts of its jax backend (and scipy), so both need jax.
@pytest.mark.parametrize(("backend", "needs"), [("numpy", ("scipy", "jax")), ("jax", ("jax",))])
def test_an_exported_keras_file_loads_on_another_backend_without_torch(
    exported_compact, backend: str, needs: tuple[str, ...], tmp_path: Path
) -> None:
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"Keras' {backend} backend needs {', '.join(missing)}, which is not installed")
    assert exported_compact.probs.max(axis=1).mean() > 0.5  # confident predictions: a real comparison
    np.save(tmp_path / "images.npy", exported_compact.images)
    fit = "fit" if backend != "numpy" else "no"  # Keras' numpy backend runs inference only
    run = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_TORCH, str(exported_compact.keras_file), str(tmp_path / "images.npy"),
         str(tmp_path / "probs.npy"), fit],
        env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend and report["optimizer"] == "keras.src.optimizers.adam"
    probs = np.load(tmp_path / "probs.npy")
    assert np.abs(probs - exported_compact.probs).max() <= TOLERANCE
    if fit == "fit":
        assert report["steps"] == 1 and report["changed"] == report["weights"] == 8 and np.isfinite(report["loss"])


def test_a_loaded_export_trains_on_in_keras(exported_compact) -> None:
    model = keras.saving.load_model(exported_compact.keras_file)
    assert model.optimizer.get_config()["epsilon"] == 1e-7
    x = exported_compact.images[:16].transpose(0, 2, 3, 1).astype(np.float32) / 255
    before = [np.array(w) for w in model.get_weights()]
    history = model.fit(x, keras.utils.to_categorical(np.arange(16) % 10, 10), batch_size=16, verbose=0)
    assert int(model.optimizer.iterations) == 1 and np.isfinite(history.history["loss"][0])
    assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_an_export_that_would_name_a_backend_class_is_refused(
    exported_compact, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the public optimizer name, Keras on PyTorch writes its backend's Adam; the export must not pass."""
    monkeypatch.setattr(writing, "name_public_optimizer", lambda path, optimizer: None)
    output = tmp_path / "model.keras"
    err = refused(["export", "--ckpt_path", str(exported_compact.checkpoint), "--output", str(output),
                   "--data_dir", str(tmp_path / "none")], capsys, output)  # fmt: skip
    assert "keras.src.backend.torch.optimizers.torch_adam" in err and "other backends cannot import" in err


def test_a_standardized_network_exports_with_the_standardization_folded_in() -> None:
    torch.manual_seed(0)
    net = CompactCNN().net.eval()
    images = np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28)).astype(np.uint8)
    model = mapping.keras_model_for(net, "standardize")
    expected = PixelClassifier(net, "standardize")(torch.from_numpy(images).float()).detach().numpy()
    np.testing.assert_allclose(keras_predict(model, images), expected, atol=1e-5)


# --- bad input: one message naming the file, exit 1, nothing written ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"just some text\n", "neither an HDF5 file"),
        ("hdf5", "HDF5 file without Keras weights"),
        ("zip", "a zip file but not a Keras model"),
    ],
)
def test_unreadable_model_files_are_refused(content: Any, message: str, tmp_path: Path, capsys) -> None:
    model_file = tmp_path / "model.keras"
    if content == "hdf5":
        model_file = tmp_path / "model.h5"
        with h5py.File(model_file, "w") as h5:
            h5["measurements"] = np.arange(10)
    elif content == "zip":
        import zipfile

        with zipfile.ZipFile(model_file, "w") as archive:
            archive.writestr("notes.txt", "not a model")
    elif content is not None:
        model_file.write_bytes(content)
    output = tmp_path / "out.ckpt"
    err = refused(["import-keras", str(model_file), "--config", str(CONFIGS / "compact.yaml"), "--output", str(output)],
                  capsys, output)  # fmt: skip
    assert str(model_file) in err and message in err


@pytest.mark.parametrize("fmt", FORMATS)
def test_another_architecture_is_refused_naming_the_first_differing_layer(fmt: str, tmp_path: Path, capsys) -> None:
    model = compile_as_notebooks(notebook_a(dense_units=64))
    path = tmp_path / f"wide.{fmt}"
    if fmt == "weights.h5":
        model.save_weights(path)
    else:
        model.save(path)
    output = tmp_path / "out.ckpt"
    err = refused(["import-keras", str(path), "--config", str(CONFIGS / "keras_report.yaml"), "--output", str(output)],
                  capsys, output)  # fmt: skip
    assert "layer 4 of those with weights" in err and "(Dense) in the file" in err
    assert "(576, 128) and (128,)" in err and "found weights (576, 64) and (64,)" in err


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize(
    ("change", "expected"),
    [({"activation": "tanh"}, "does tanh, where KerasReportCNN"),
     ({"pooling": "average"}, "AveragePooling2D")],
)  # fmt: skip
def test_same_shapes_but_other_computation_is_refused(
    fmt: str, change: dict[str, str], expected: str, tmp_path: Path, capsys
) -> None:
    path = tmp_path / f"near_miss.{fmt}"
    compile_as_notebooks(notebook_a(**change)).save(path)
    output = tmp_path / "out.ckpt"
    err = refused(["import-keras", str(path), "--config", str(CONFIGS / "keras_report.yaml"), "--output", str(output)],
                  capsys, output)  # fmt: skip
    assert str(path) in err and "predictions would differ" in err and expected in err


def test_an_existing_output_is_kept_unless_overwrite(tmp_path: Path, capsys) -> None:
    path = tmp_path / "compact.weights.h5"
    compile_as_notebooks(notebook_b()).save_weights(path)
    output = tmp_path / "out.ckpt"
    output.write_bytes(b"earlier")
    args = ["import-keras", str(path), "--config", str(CONFIGS / "compact.yaml"), "--output", str(output)]
    assert exit_code(args) == 1
    assert "--overwrite" in capsys.readouterr().err and output.read_bytes() == b"earlier"
    main([*args, "--overwrite"])
    assert torch.load(output, weights_only=True)["hyper_parameters"]["_class_path"] == "mnist_lit.models.CompactCNN"


def test_an_output_in_a_missing_folder_or_without_ckpt_suffix_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "compact.weights.h5"
    compile_as_notebooks(notebook_b()).save_weights(path)
    for output, message in ((tmp_path / "nowhere" / "out.ckpt", "does not exist"), (tmp_path / "out.pt", ".ckpt")):
        err = refused(["import-keras", str(path), "--config", str(CONFIGS / "compact.yaml"), "--output", str(output)],
                      capsys, output)  # fmt: skip
        assert message in err
