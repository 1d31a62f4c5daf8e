"""Measure the "Coming from Keras" table: both networks, both directions, on the 10,000 MNIST test images.

    KERAS_BACKEND=torch python benchmarks/keras_equivalence.py --data-dir data [--keras-images 12000] [--epochs 1]
        [--tf-python /path/to/tf-env/bin/python] [--checkpoint X.ckpt ...]

Keras -> mnist_lit: the notebook's Keras model (its own Keras code, on Keras' PyTorch backend) is trained for
``--epochs`` on the first ``--keras-images`` training images, saved as ``.keras``, imported with ``import-keras``,
and evaluated with ``test``. mnist_lit -> Keras: the config is trained with ``fit`` for ``--epochs`` (then tested, as
``fit`` does), exported with ``export`` to ``.keras``, loaded with Keras and evaluated there. For each: the largest
difference of any probability between Keras' ``predict`` and mnist_lit's, how many digits agree, and the test
accuracy each side reports. Prints a markdown table. Everything is written into a temporary folder.

Then each exported ``.keras`` is loaded by a plain ``keras.models.load_model`` in a fresh process on every other
Keras backend there is (``keras_load.py``): JAX and numpy in this Python, with torch made unimportable, as where it
is not installed, and TensorFlow in the Python that ``--tf-python`` names (a TensorFlow environment: the export's
real target). For each: max |Δp| against the checkpoint, the test accuracy Keras' ``evaluate`` reports, and the loss
before and after one epoch of ``fit`` on 256 test images, from the compile settings saved in the file.
``--checkpoint`` skips the training: it exports and checks the given checkpoints only.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from mnist_lit.cli import main as mnist_lit  # noqa: E402
from mnist_lit.inference.torch_runner import TorchRunner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOADER = Path(__file__).with_name("keras_load.py")
#: Runs the loader with torch unimportable, as in an environment without it.
WITHOUT_TORCH = (
    "import runpy, sys; sys.modules['torch'] = None; sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
)


def notebook_model(name: str) -> keras.Model:
    """The notebook's model, as its Keras code builds and compiles it."""
    layers = keras.layers
    if name == "keras_report":
        stack = [
            layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"), layers.Flatten(),
            layers.Dense(128, activation="relu"), layers.Dropout(0.5), layers.Dense(10, activation="softmax"),
        ]  # fmt: skip
    else:
        stack = [
            layers.Conv2D(8, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)), layers.Dropout(0.2),
            layers.Conv2D(16, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)), layers.Dropout(0.2),
            layers.Flatten(), layers.Dense(100, activation="relu"), layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]  # fmt: skip
    model = keras.Sequential([keras.Input((28, 28, 1)), *stack])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def idx(raw: Path, name: str) -> np.ndarray:
    plain = raw / name
    data = plain.read_bytes() if plain.is_file() else gzip.decompress((raw / f"{name}.gz").read_bytes())
    return np.frombuffer(data, np.uint8, offset=16 if "images" in name else 8).copy()


def compare(keras_model: keras.Model, checkpoint: Path, images: np.ndarray, labels: np.ndarray) -> dict:
    """Keras' and mnist_lit's probabilities on the test images, and Keras' own test accuracy."""
    x = images.transpose(0, 2, 3, 1).astype(np.float32) / 255
    keras_probs = np.asarray(keras_model.predict(x, batch_size=1000, verbose=0))
    ours = TorchRunner(checkpoint).probabilities(images)
    _, keras_accuracy = keras_model.evaluate(x, keras.utils.to_categorical(labels, 10), batch_size=1000, verbose=0)
    return {
        "max_dp": float(np.abs(keras_probs - ours).max()),
        "same_digit": int((keras_probs.argmax(1) == ours.argmax(1)).sum()),
        "keras_acc": keras_accuracy,
    }


def test_accuracy(config: Path, checkpoint: Path, data_dir: Path, logs: Path) -> float:
    mnist_lit(["test", "--config", str(config), "--ckpt_path", str(checkpoint), "--data.data_dir", str(data_dir),
               "--trainer.logger.init_args.save_dir", str(logs), "--trainer.enable_progress_bar", "false"])  # fmt: skip
    (report,) = sorted(logs.rglob("metrics.json"), key=lambda p: p.stat().st_mtime)[-1:]
    return json.loads(report.read_text())["test_acc"]


def other_backends(tf_python: Path | None) -> dict[str, list[str]]:
    """The command that runs the loader, per Keras backend available: this Python's (torch only where it is the
    backend), and the TensorFlow environment's."""
    backends = {"torch": [sys.executable]}
    if importlib.util.find_spec("jax") is not None:
        backends["jax"] = [sys.executable, "-c", WITHOUT_TORCH]
    if importlib.util.find_spec("scipy") is not None:  # Keras' numpy backend needs it
        backends["numpy"] = [sys.executable, "-c", WITHOUT_TORCH]
    if tf_python is not None:
        backends["tensorflow"] = [str(tf_python)]
    return backends


def check_backends(exported: Path, checkpoint: Path, images: np.ndarray, labels: np.ndarray, work: Path,
                   tf_python: Path | None) -> list[dict]:  # fmt: skip
    """The exported file loaded and run in a fresh process on every Keras backend available."""
    ours = TorchRunner(checkpoint).probabilities(images)
    np.save(work / "images.npy", images)
    np.save(work / "labels.npy", labels)
    rows = []
    for backend, command in other_backends(tf_python).items():
        out = work / f"{backend}.npz"
        run = subprocess.run(
            [*command, str(LOADER), str(exported), str(work / "images.npy"), str(work / "labels.npy"), str(out)],
            env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True,
        )  # fmt: skip
        if run.returncode != 0:
            rows.append({"backend": backend, "error": run.stderr.strip().splitlines()[-1]})
            continue
        found = np.load(out)
        before, after = found["losses"]
        rows.append({
            "backend": run.stdout.strip().splitlines()[-1].split(":")[0],
            "max_dp": float(np.abs(found["probs"] - ours).max()),
            "same_digit": int((found["probs"].argmax(1) == ours.argmax(1)).sum()),
            "keras_acc": float(found["accuracy"]),
            "losses": "inference only" if np.isnan(before) else f"{before:.4f} -> {after:.4f}",
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--keras-images", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--tf-python", type=Path, help="the python of an environment with TensorFlow (and Keras 3)")
    parser.add_argument("--checkpoint", type=Path, action="append", help="export and check these only; no training")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    raw = data_dir / "MNIST" / "raw"
    images = idx(raw, "t10k-images-idx3-ubyte").reshape(-1, 1, 28, 28)
    labels = idx(raw, "t10k-labels-idx1-ubyte")
    train_x = idx(raw, "train-images-idx3-ubyte").reshape(-1, 28, 28, 1)[: args.keras_images] / 255
    train_y = keras.utils.to_categorical(idx(raw, "train-labels-idx1-ubyte")[: args.keras_images], 10)
    rows, exports = [], []
    with tempfile.TemporaryDirectory(prefix="mnist_lit_interop_") as tmp:
        work = Path(tmp)
        for index, checkpoint in enumerate(args.checkpoint or []):
            exported = work / f"checkpoint_{index}.keras"
            mnist_lit(["export", "--ckpt_path", str(checkpoint), "--output", str(exported),
                       "--data_dir", str(data_dir)])  # fmt: skip
            exports.append((str(checkpoint), exported, checkpoint))
        for name, batch in (("keras_report", 64), ("compact", 128)) if not args.checkpoint else ():
            config = REPO / "configs" / f"{name}.yaml"
            keras.utils.set_random_seed(0)
            model = notebook_model(name)
            model.fit(train_x, train_y, batch_size=batch, epochs=args.epochs, verbose=0)
            model.save(work / f"{name}.keras")
            imported = work / f"{name}_imported.ckpt"
            mnist_lit(["import-keras", str(work / f"{name}.keras"), "--config", str(config), "--output", str(imported)])
            result = compare(model, imported, images, labels)
            result["ours_acc"] = test_accuracy(config, imported, data_dir, work / "logs_import")
            rows.append((name, "Keras -> mnist_lit (.keras, import-keras)", result))

            logs = work / f"logs_{name}"
            mnist_lit(["fit", "--config", str(config), "--trainer.max_epochs", str(args.epochs),
                       "--data.data_dir", str(data_dir), "--trainer.logger.init_args.save_dir", str(logs),
                       "--trainer.enable_progress_bar", "false"])  # fmt: skip
            (report,) = logs.rglob("metrics.json")
            fitted = min(p for p in logs.rglob("*.ckpt") if p.name != "last.ckpt")  # the run's own (best or last)
            exported = work / f"{name}_exported.keras"
            mnist_lit(["export", "--ckpt_path", str(fitted), "--output", str(exported), "--data_dir", str(data_dir)])
            result = compare(keras.saving.load_model(exported), fitted, images, labels)
            result["ours_acc"] = json.loads(report.read_text())["test_acc"]
            rows.append((name, "mnist_lit -> Keras (export to .keras)", result))
            exports.append((name, exported, fitted))
        by_backend = [
            (name, row) for name, exported, checkpoint in exports
            for row in check_backends(exported, checkpoint, images, labels, work, args.tf_python)
        ]  # fmt: skip
    if rows:
        print_table(rows)
    print_backends(by_backend)


def print_table(rows: list) -> None:
    print("\n| network | direction | max \\|Δp\\| (10,000 test images) | same digit | test accuracy, Keras "
          "| test accuracy, mnist_lit |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for name, direction, r in rows:
        print(f"| {name} | {direction} | {r['max_dp']:.1e} | {r['same_digit']:,} / 10,000 | {r['keras_acc']:.2%} "
              f"| {r['ours_acc']:.2%} |")  # fmt: skip


def print_backends(by_backend: list) -> None:
    print("\n| exported model | loaded on | max \\|Δp\\| (10,000 test images) | same digit | test accuracy, Keras "
          "| fit, loss before -> after one epoch on 256 images |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in by_backend:
        if "error" in r:
            print(f"| {name} | {r['backend']} | failed: {r['error']} | | | |")
        else:
            print(f"| {name} | {r['backend']} | {r['max_dp']:.1e} | {r['same_digit']:,} / 10,000 "
                  f"| {r['keras_acc']:.2%} | {r['losses']} |")  # fmt: skip


if __name__ == "__main__":
    main()
