""" "Not a digit" and digits from elsewhere, measured on what training never saw.

For each checkpoint (calibrated or not: the scores read its temperature), every score is fitted as ``calibrate``
fits it (``mnist_lit.training.ood.fit_ood``: Mahalanobis statistics on the training images, the threshold that keeps
99% of the validation digits), then scored on:

- the 10,000 MNIST test digits (the positives), and the share of them called "not a digit";
- ``--per_family`` images of each held-out outlier family (``mnist_lit.data.outliers.HELD_OUT_FAMILIES``, seed
  2026, as ``OODReport`` makes them): per family AUROC and FPR at 95% TPR, and the share called "not a digit" at the
  fitted threshold; the digit-like letters (O o I l i S s Z z B b g q D) apart;
- real handwritten digits from outside MNIST, both shipped inside packages (nothing downloaded): scikit-learn's
  ``load_digits`` (UCI optical recognition of handwritten digits: 1,797 digits by 43 writers, 8 x 8, ink counts
  0-16) and pyclustering's ``samples/images/digits`` (250 PNG drawings, 25 of each digit, 32 x 32, dark on
  light); each prepared as ``classify`` prepares a user's picture (``mnist_preprocess``). Accuracy, and the share
  of them wrongly called "not a digit".

With ``--adapt``, also the label-free test-time adaptation of BatchNorm (its statistics re-estimated on each set of
digits from elsewhere, as SHOT and TENT adapt on the target images): reported apart, since it adapts on the very
images it is judged on.

    python benchmarks/ood.py --data_dir data --out runs/ood robust=robust-calibrated.ckpt plain=accurate.ckpt
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_lit.callbacks.ood import DIGIT_LIKE_SET, held_out_sets, network_outputs
from mnist_lit.cli.calibrate import datamodule_for
from mnist_lit.data.images import mnist_preprocess, read_picture
from mnist_lit.models.ood import OOD_METHODS
from mnist_lit.reporting.ood import detection_summary, roc_figure
from mnist_lit.training.checkpoints import network_from_checkpoint, read_checkpoint
from mnist_lit.training.ood import fit_ood, split_outputs


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """UCI's optical digits as scikit-learn ships them (8 x 8, 0-16, ink high), in MNIST's form."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack([mnist_preprocess(image * (255.0 / 16.0), invert="never") for image in digits.images])
    return images, digits.target.astype(np.int64)


def pyclustering_digits() -> tuple[np.ndarray, np.ndarray]:
    """pyclustering's 250 digit drawings (``Digit_<d>_Sample<k>.png``), dark on light, in MNIST's form."""
    import pyclustering

    folder = Path(pyclustering.__file__).parent / "samples" / "images" / "digits"
    files = sorted(folder.glob("Digit_*_Sample*.png"))
    if len(files) != 250:
        raise SystemExit(f"expected 250 digit pictures in {folder}, found {len(files)}")
    images = np.stack([mnist_preprocess(read_picture(path), invert="auto") for path in files])
    labels = np.array([int(path.name.split("_")[1]) for path in files])
    return images, labels


REAL_SETS = {"uci_8x8 (scikit-learn)": sklearn_digits, "pyclustering drawings": pyclustering_digits}


def adapted(model: nn.Module, normalize: Any, images: np.ndarray) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are those of ``images`` (one pass, cumulative average)."""
    copied = copy.deepcopy(model)
    norms = [m for m in copied.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    copied.train()
    with torch.no_grad():
        for start in range(0, len(images), 256):
            copied(normalize(torch.from_numpy(images[start : start + 256]).unsqueeze(1)))
    copied.eval()
    return copied


def evaluate(name: str, path: str, args: argparse.Namespace, sets: dict[str, np.ndarray],
             real: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    checkpoint = read_checkpoint(path)
    model = network_from_checkpoint(checkpoint, path).model
    dm = datamodule_for(checkpoint, args.data_dir)
    dm.prepare_data()
    dm.setup("fit")
    test_logits, test_features, test_labels = split_outputs(model, dm, "test")
    outputs = {family: network_outputs(model, dm.normalize, images) for family, images in sets.items()}
    real_outputs = {s: network_outputs(model, dm.normalize, images) for s, (images, _) in real.items()}
    result: dict[str, Any] = {
        "checkpoint": path,
        "temperature": float(model.temperature),
        "test_acc": float((test_logits.argmax(1) == test_labels).float().mean()),
        "scores": {},
    }
    for s, (_, labels) in real.items():
        result.setdefault("real_acc", {})[s] = float((real_outputs[s][0].argmax(1).numpy() == labels).mean())
    curves = {}
    for method in OOD_METHODS:
        fit = fit_ood(model, dm, method, args.keep)
        scorer, temperature = model.ood, model.temperature

        def score(logits: torch.Tensor, features: torch.Tensor | None) -> np.ndarray:
            with torch.no_grad():
                return scorer(logits, features, temperature).numpy()  # noqa: B023  # used within the iteration

        digits = score(test_logits, test_features)
        families = {family: detection_summary(digits, score(*outputs[family]), fit.threshold) for family in sets}
        pooled = np.concatenate([score(*outputs[f]) for f in sets if f != DIGIT_LIKE_SET])
        curves[f"{name}: {method}"] = (digits, pooled)
        result["scores"][method] = {
            "threshold": fit.threshold,
            "test_not_digit": float((digits > fit.threshold).mean()),
            "families": families,
            "all_held_out": detection_summary(digits, pooled, fit.threshold),
            "real_not_digit": {s: float((score(*real_outputs[s]) > fit.threshold).mean()) for s in real},
        }
        print(f"{name} {method}: pooled AUROC {result['scores'][method]['all_held_out']['auroc']:.4f}", flush=True)
    if args.adapt:
        for s, (images, labels) in real.items():
            tuned = adapted(model, dm.normalize, images)
            logits, _ = network_outputs(tuned, dm.normalize, images)  # type: ignore[arg-type]
            result.setdefault("real_acc_adapted", {})[s] = float((logits.argmax(1).numpy() == labels).mean())
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["_curves"] = curves
    return result


def tables(results: dict[str, dict[str, Any]], families: list[str], real: list[str]) -> str:
    columns = [(name, method) for name in results for method in OOD_METHODS]
    head = "| family | " + " | ".join(f"{n}: {m}" for n, m in columns) + " |\n|---|" + "---|" * len(columns)
    lines = [head]
    for family in [*families, "all_held_out"]:
        cells = []
        for name, method in columns:
            r = results[name]["scores"][method]
            d = r["all_held_out"] if family == "all_held_out" else r["families"][family]
            cells.append(f"{d['auroc']:.3f} / {d['fpr_at_95_tpr']:.1%} / {d['others_not_digit']:.0%}")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    lines.append(
        "| MNIST test called not a digit | "
        + " | ".join(f"{results[n]['scores'][m]['test_not_digit']:.2%}" for n, m in columns)
        + " |"
    )
    out = "AUROC / FPR at 95% TPR / share called not a digit at the fitted threshold\n\n" + "\n".join(lines) + "\n\n"
    head = "| digits from elsewhere | " + " | ".join(results) + " |\n|---|" + "---|" * len(results)
    rows = [head]
    for s in real:
        cells = []
        for r in results.values():
            adapted_acc = r.get("real_acc_adapted", {}).get(s)
            extra = f" (BN adapted: {adapted_acc:.1%})" if adapted_acc is not None else ""
            nd = ", ".join(f"{m} {r['scores'][m]['real_not_digit'][s]:.1%}" for m in OOD_METHODS)
            cells.append(f"{r['real_acc'][s]:.1%}{extra}; not a digit: {nd}")
        rows.append(f"| {s} | " + " | ".join(cells) + " |")
    return out + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--data_dir", help="the MNIST data folder (default: each checkpoint's own)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per_family", type=int, default=500)
    parser.add_argument("--keep", type=float, default=0.99)
    parser.add_argument("--adapt", action="store_true", help="also re-estimate BatchNorm on the real digit sets")
    parser.add_argument("--figure", type=Path, help="also save the pooled ROC figure here (e.g. docs/ood_roc.png)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sets, missing = held_out_sets(args.per_family)
    for reason in missing:
        print(f"left out: {reason}")
    real = {name: make() for name, make in REAL_SETS.items()}
    results = {}
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        results[name] = evaluate(name, path, args, sets, real)
    curves = {k: v for r in results.values() for k, v in r.pop("_curves").items()}
    figure = roc_figure(curves, "MNIST test digits against all held-out non-digits")
    figure.savefig(args.out / "ood_roc.png", dpi=110)
    if args.figure:
        figure.savefig(args.figure, dpi=90)
    text = tables(results, list(sets), list(real))
    (args.out / "ood_table.md").write_text(text)
    (args.out / "ood.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"Wrote {args.out}/ood_table.md, ood.json, ood_roc.png")


if __name__ == "__main__":
    main()
