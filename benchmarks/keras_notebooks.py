"""The two notebooks' own Keras code, to time against ``mnist_lit`` on the same machine.

    python benchmarks/keras_notebooks.py --notebook report --epochs 3 --data-dir data
    python benchmarks/keras_notebooks.py --notebook report --until 0.99 --data-dir data

Needs TensorFlow (``pip install tensorflow-cpu``), which is never a dependency of ``mnist_lit``: run it with an
interpreter that has it (``benchmarks/bench.py --keras-python``). It imports nothing from ``mnist_lit``.

The networks, compile and fit calls are the notebooks' (Notebook A: ``validation_split=0.2``, EarlyStopping on
``val_loss``, patience 3, best weights restored; Notebook B: the test set as validation data, TensorBoard with
weight histograms every epoch). Only the data source differs: the MNIST IDX files under ``--data-dir`` instead
of ``keras.datasets.mnist`` (the same images). ``--epochs`` overrides the number of epochs (for timing);
``--until`` stops after the first epoch whose test accuracy reaches the target (time to accuracy).

Prints one JSON line: wall seconds per epoch (validation included, as Keras' ``fit`` runs it), the test
accuracy and loss, and the seconds from process start to the end of the test.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before the heavy imports, as a user's `python notebook.py` would count

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (plain or ``.gz``) as a numpy array: what ``keras.datasets.mnist.load_data`` returns."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(data_dir: Path) -> dict[str, np.ndarray]:
    """The four arrays, from ``<data_dir>/MNIST/raw`` (as torchvision and mnist_lit keep them) or ``data_dir``."""
    arrays = {}
    for key, stem in FILES.items():
        candidates = [d / name for d in (data_dir / "MNIST" / "raw", data_dir) for name in (stem, stem + ".gz")]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            sys.exit(f"keras_notebooks.py: no {stem}[.gz] under {data_dir}; run `python -m mnist_lit fit` once")
        arrays[key] = read_idx(found)
    return arrays


class EpochTimes:
    """Wall seconds of each epoch, validation included (``on_epoch_end`` runs after it)."""

    def __init__(self, keras: Any) -> None:
        outer = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                outer._start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                outer.seconds.append(time.perf_counter() - outer._start)

        self.seconds: list[float] = []
        self.callback = _Callback()


def until_accuracy(keras: Any, x_test: np.ndarray, y_test: np.ndarray, target: float) -> Any:
    """Stop training after the first epoch whose test accuracy reaches ``target``."""

    class _Callback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            _, acc = self.model.evaluate(x_test, y_test, batch_size=256, verbose=0)
            if acc >= target:
                self.model.stop_training = True

    return _Callback()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", choices=("report", "compact"), required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--epochs", type=int, default=None, help="default: the notebook's (50 or 5)")
    parser.add_argument("--until", type=float, default=None, help="stop once test accuracy reaches this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow's intra-op threads (default: its own)")
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from keras import layers
    from keras.models import Sequential

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    data = load_mnist(args.data_dir)
    x_train = data["x_train"].reshape(-1, 28, 28, 1).astype("float32") / 255
    x_test = data["x_test"].reshape(-1, 28, 28, 1).astype("float32") / 255
    y_train = keras.utils.to_categorical(data["y_train"], 10)
    y_test = keras.utils.to_categorical(data["y_test"], 10)
    timer = EpochTimes(keras)
    callbacks = [timer.callback]

    if args.notebook == "report":
        model = Sequential([
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ])  # fmt: skip
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
        fit = {"epochs": 50, "batch_size": 64, "validation_split": 0.2, "callbacks": [early]}
    else:
        model = Sequential([
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(8, (3, 3), activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(0.2),
            layers.Conv2D(16, (3, 3), activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(0.2),
            layers.Flatten(),
            layers.Dense(100, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ])  # fmt: skip
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        log_dir = tempfile.mkdtemp(prefix="keras_notebook_b_")
        board = keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=1)
        fit = {"epochs": 5, "batch_size": 128, "validation_data": (x_test, y_test), "callbacks": [board]}

    if args.epochs is not None:
        fit["epochs"] = args.epochs
    if args.until is not None:
        callbacks.append(until_accuracy(keras, x_test, y_test, args.until))
    fit["callbacks"] = fit["callbacks"] + callbacks
    model.fit(x_train, y_train, verbose=0, **fit)
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({
        "notebook": args.notebook, "tensorflow": tf.__version__, "keras": keras.__version__,
        "params": model.count_params(), "epochs_run": len(timer.seconds), "epoch_s": timer.seconds,
        "test_acc": float(test_acc), "test_loss": float(test_loss),
        "wall_s_from_process_start": time.perf_counter() - PROCESS_START,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
