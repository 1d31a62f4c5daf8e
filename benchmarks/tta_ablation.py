"""Test-time augmentation, measured on trained checkpoints: does averaging over moved copies of each image help?

    python benchmarks/tta_ablation.py --data-dir data RUN/checkpoints/last.ckpt [more checkpoints ...]

Each checkpoint's network classifies its own run's validation split (rebuilt from the data module's settings that the
checkpoint saved: split, fraction, seed) and the test set, once per view: the image itself, shifted by one pixel
in each of four directions, rotated by +-8 degrees, zoomed by 0.9 and 1.1. A set of views is scored by the argmax of
its summed probabilities. Whether to use test-time augmentation is to be decided on the validation columns alone;
the test columns are printed for the report. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import Tensor

from mnist_lit.data.augment import apply_affine
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.normalization import MNIST_MEAN, MNIST_STD
from mnist_lit.training.checkpoints import load_trained_network, read_checkpoint

#: Each view as (rotation in degrees, zoom, shift x, shift y in pixels), in affine_grid's output-to-input sense.
VIEWS = {
    "identity": (0, 1.0, 0, 0),
    "x+1": (0, 1.0, 1, 0), "x-1": (0, 1.0, -1, 0), "y+1": (0, 1.0, 0, 1), "y-1": (0, 1.0, 0, -1),
    "rot+8": (8, 1.0, 0, 0), "rot-8": (-8, 1.0, 0, 0),
    "zoom0.9": (0, 0.9, 0, 0), "zoom1.1": (0, 1.1, 0, 0),
}  # fmt: skip
SHIFTS = ["x+1", "x-1", "y+1", "y-1"]
#: The sets of views compared, each scored by the sum of its views' probabilities.
COMBINATIONS = {
    "none (identity only)": ["identity"],
    "identity + 4 one-pixel shifts": ["identity", *SHIFTS],
    "identity + rotations +-8": ["identity", "rot+8", "rot-8"],
    "identity + zooms 0.9, 1.1": ["identity", "zoom0.9", "zoom1.1"],
    "all 9 views": list(VIEWS),
}


def view_matrix(n: int, side: int, rotation: float, zoom: float, dx: float, dy: float) -> Tensor:
    """``n`` copies of the affine_grid matrix of one view, for square images of ``side`` pixels."""
    angle = math.radians(rotation)
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    theta = torch.tensor([[cos, -sin, dx * 2 / side], [sin, cos, dy * 2 / side]])
    return theta.expand(n, 2, 3)


@torch.inference_mode()
def view_probabilities(path: Path, data_dir: str, batch: int = 1000) -> dict[str, tuple[dict[str, Tensor], Tensor]]:
    """For the validation split and the test set: each view's class probabilities, and the labels."""
    network = load_trained_network(path, "checkpoint")
    saved = read_checkpoint(path, "checkpoint").get("datamodule_hyper_parameters", {})
    split = {k: saved[k] for k in ("val_split", "val_fraction", "seed") if k in saved}
    datamodule = MNISTDataModule(data_dir=data_dir, normalization=network.normalization, **split)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    result = {}
    for name, dataset in (("val", datamodule.data_val), ("test", datamodule.data_test)):
        if dataset is None:
            continue
        pixels = dataset.images.float().div(255.0).unsqueeze(1)  # background 0 while the views move the images
        probabilities = {}
        for view, params in VIEWS.items():
            parts = []
            for start in range(0, len(pixels), batch):
                chunk = pixels[start : start + batch]
                if view != "identity":
                    chunk = apply_affine(chunk, view_matrix(len(chunk), chunk.shape[-1], *params))
                if network.normalization == "standardize":
                    chunk = (chunk - MNIST_MEAN) / MNIST_STD
                parts.append(network.model(chunk).softmax(dim=1))
            probabilities[view] = torch.cat(parts)
        result[name] = (probabilities, dataset.labels)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    scores: dict[str, dict[str, list[float]]] = {c: {"val": [], "test": []} for c in COMBINATIONS}
    for path in args.checkpoints:
        for split, (probabilities, labels) in view_probabilities(path, args.data_dir).items():
            for combination, views in COMBINATIONS.items():
                predicted = sum(probabilities[v] for v in views).argmax(dim=1)
                scores[combination][split].append(100 * (predicted == labels).float().mean().item())
    print(f"{len(args.checkpoints)} checkpoints: {', '.join(map(str, args.checkpoints))}\n")
    print("| views averaged | validation accuracy, each checkpoint | mean | test accuracy, each checkpoint | mean |")
    print("| --- | --- | --- | --- | --- |")
    for combination, split_scores in scores.items():
        cells = []
        for split in ("val", "test"):
            values = split_scores[split]
            cells += [", ".join(f"{v:.2f}" for v in values), f"{sum(values) / max(len(values), 1):.3f}"]
        print(f"| {combination} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
