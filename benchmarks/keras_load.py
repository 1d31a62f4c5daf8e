"""python keras_load.py MODEL.keras IMAGES.npy LABELS.npy OUT.npz: load an exported model with a plain
``keras.models.load_model`` and run it, on the backend ``KERAS_BACKEND`` names, in any Python with Keras 3 (no
mnist_lit, no torch needed: a TensorFlow or JAX environment as a user has it).

IMAGES are raw pixels (N, 1, 28, 28) uint8, LABELS the digits. Writes to OUT: the probabilities ``predict`` gives
(fed as the notebooks fed their models: pixels / 255, channels last), the accuracy ``evaluate`` reports, and whether
``fit`` trained on from the saved compile settings (one epoch of 256 images: loss before and after, NaN where the
backend cannot train). Prints the backend and the versions.
"""

from __future__ import annotations

import sys

import keras
import numpy as np


def main(model_path: str, images_path: str, labels_path: str, out_path: str) -> None:
    model = keras.models.load_model(model_path)
    x = np.load(images_path).transpose(0, 2, 3, 1).astype(np.float32) / 255
    y = keras.utils.to_categorical(np.load(labels_path), 10)
    probs = np.asarray(model.predict(x, batch_size=1000, verbose=0))
    _, accuracy = model.evaluate(x, y, batch_size=1000, verbose=0)
    optimizer = model.optimizer
    optimizer_class = f"{type(optimizer).__module__}.{type(optimizer).__name__}"
    settings = {k: float(optimizer.get_config()[k]) for k in ("learning_rate", "beta_1", "beta_2", "epsilon")}
    losses = [float("nan"), float("nan")]
    if keras.backend.backend() != "numpy":  # Keras' numpy backend runs inference only
        before = model.evaluate(x[:256], y[:256], verbose=0)[0]
        model.fit(x[:256], y[:256], batch_size=32, epochs=1, verbose=0)
        losses = [float(before), float(model.evaluate(x[:256], y[:256], verbose=0)[0])]
    np.savez(out_path, probs=probs, accuracy=accuracy, losses=np.array(losses))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        backend += f" {tf.__version__}"
    print(
        f"Keras {keras.__version__} on {backend}: {optimizer_class} {settings}"
        f", loss {model.loss}, fit loss {losses[0]:.4f} -> {losses[1]:.4f}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
