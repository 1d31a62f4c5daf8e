"""How often does a network say "not sure" about inputs that are no digit at all?

Four kinds, 300 of each, seeded: uniform noise; a blank image with a few specks; letters (A-Z, a-z) rendered with
the DejaVu fonts matplotlib ships, without the ones a digit is commonly written as (O o I l i j S s Z z B b g q D);
random strokes (one to three thick lines or arcs). Each is run as given (28 x 28, raw pixels) and as the web page and
``classify`` would see it (through :func:`~mnist_lit.data.images.mnist_preprocess`, which crops the ink and scales it
to MNIST's 20-pixel box; blank ones are refused there and counted apart). For each checkpoint: the fraction marked
unsure at its threshold, and at fixed thresholds (0.9, 0.99) for checkpoints without one, and the median top
probability.

    python benchmarks/non_digits.py --out runs/ keras_report=k-calibrated.ckpt fast=fast.ckpt
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_lit.data.images import BlankImageError, mnist_preprocess
from mnist_lit.inference.torch_runner import TorchRunner
from mnist_lit.reporting import plots

COUNT = 300
DIGIT_LIKE = set("OoIliljSsZzBbgqD")
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf")


def uniform_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)


def specks(rng: np.random.Generator, n: int) -> np.ndarray:
    images = np.zeros((n, 28, 28), np.uint8)
    for image in images:
        for _ in range(rng.integers(2, 7)):
            y, x = rng.integers(0, 27, 2)
            image[y : y + rng.integers(1, 3), x : x + rng.integers(1, 3)] = rng.integers(128, 256)
    return images


def letters(rng: np.random.Generator, n: int) -> np.ndarray:
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = [ImageFont.truetype(str(font_dir / name), 200) for name in FONTS if (font_dir / name).is_file()]
    alphabet = [c for c in string.ascii_letters if c not in DIGIT_LIKE]
    images = []
    for i in range(n):
        canvas = Image.new("L", (280, 280), 0)
        ImageDraw.Draw(canvas).text((140, 140), alphabet[i % len(alphabet)], fill=255, font=fonts[i % len(fonts)],
                                    anchor="mm")  # fmt: skip
        images.append(np.asarray(canvas.resize((28, 28), Image.Resampling.LANCZOS)))
    return np.stack(images)


def strokes(rng: np.random.Generator, n: int) -> np.ndarray:
    images = []
    for _ in range(n):
        canvas = Image.new("L", (280, 280), 0)
        draw = ImageDraw.Draw(canvas)
        for _ in range(rng.integers(1, 4)):
            if rng.random() < 0.5:
                draw.line([tuple(rng.integers(20, 260, 2)), tuple(rng.integers(20, 260, 2))], fill=255, width=26)
            else:
                x0, y0 = rng.integers(20, 160, 2)
                box = (x0, y0, x0 + rng.integers(60, 120), y0 + rng.integers(60, 120))
                start = rng.integers(0, 360)
                draw.arc(box, start, start + rng.integers(60, 270), fill=255, width=26)
        images.append(np.asarray(canvas.resize((28, 28), Image.Resampling.LANCZOS)))
    return np.stack(images)


KINDS = {"uniform noise": uniform_noise, "blank with specks": specks, "letters": letters, "random strokes": strokes}


def preprocessed(images: np.ndarray) -> tuple[np.ndarray, int]:
    kept, blank = [], 0
    for image in images:
        try:
            kept.append(mnist_preprocess(image, invert="never"))
        except BlankImageError:
            blank += 1
    return (np.stack(kept) if kept else np.zeros((0, 28, 28), np.uint8)), blank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    inputs = {}
    for kind, make in KINDS.items():
        raw = make(rng, COUNT)
        inputs[(kind, "as given")] = (raw, 0)
        inputs[(kind, "preprocessed")] = preprocessed(raw)
    sample = np.concatenate([inputs[(k, "preprocessed")][0][:6] for k in KINDS])
    plots.image_grid(sample, [k.split()[-1] for k in KINDS for _ in range(6)], "Non-digits, preprocessed",
                     ncols=6).savefig(args.out / "non_digits_samples.png", dpi=70)  # fmt: skip
    results: dict = {}
    lines = []
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        runner = TorchRunner(path)
        threshold = runner.unsure_threshold
        for (kind, mode), (images, blank) in inputs.items():
            conf = runner.probabilities(images[:, None]).max(axis=1) if len(images) else np.zeros(0)
            entry = {
                "images": len(images),
                "refused_blank": blank,
                "threshold": threshold,
                "unsure": float((conf < threshold).mean()) if threshold and len(conf) else None,
                "under_0.9": float((conf < 0.9).mean()) if len(conf) else None,
                "under_0.99": float((conf < 0.99).mean()) if len(conf) else None,
                "median_top_probability": float(np.median(conf)) if len(conf) else None,
                "confident_0.99": float((conf >= 0.99).mean()) if len(conf) else None,
            }
            results.setdefault(name, {})[f"{kind} ({mode})"] = entry
            unsure = f"{entry['unsure']:.0%}" if entry["unsure"] is not None else "–"
            lines.append(
                f"| {name} | {kind} | {mode} | {entry['images']} (+{blank} refused as blank) | {unsure} | "
                f"{_pct(entry['under_0.9'])} | {_pct(entry['under_0.99'])} | {_pct(entry['confident_0.99'])} | "
                f"{entry['median_top_probability'] or 0:.3f} |"
            )
            print(lines[-1], flush=True)
    header = (
        "| config | kind | input | images | unsure at its threshold | top p < 0.9 | top p < 0.99 | top p >= 0.99 | "
        "median top p |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    (args.out / "non_digits_table.md").write_text(header + "\n".join(lines) + "\n")
    (args.out / "non_digits.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {args.out}/non_digits_table.md, non_digits.json, non_digits_samples.png")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


if __name__ == "__main__":
    main()
