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

    python benchmarks/ood.py --data_dir data --out runs/ood robust=R0.ckpt robust=R1.ckpt plain=A0.ckpt plain=A1.ckpt

A NAME given more than once is one configuration over seeds: the tables give its mean and 95% interval.
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

from mnist_lit.callbacks.adapt import adapt_batchnorm
from mnist_lit.callbacks.ood import DIGIT_LIKE_SET, held_out_sets, network_outputs
from mnist_lit.cli.calibrate import datamodule_for
from mnist_lit.data.images import mnist_preprocess, read_picture
from mnist_lit.experiments.stats import spread
from mnist_lit.models.ood import OOD_METHODS
from mnist_lit.reporting.ood import detection_summary, is_not_digit, keep_threshold, roc_figure
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
    """A copy of ``model`` whose BatchNorm statistics are those of ``images`` (as ``AdaptBatchNorm`` adapts)."""
    copied = copy.deepcopy(model)
    pixels = torch.from_numpy(images).unsqueeze(1)
    adapt_batchnorm(copied, (normalize(pixels[start : start + 256]) for start in range(0, len(pixels), 256)))
    return copied


def fitted_scores(model: Any, logits: torch.Tensor, features: torch.Tensor | None) -> np.ndarray:
    """The scores of the model's fitted OOD score (``model.ood``) at its temperature."""
    with torch.no_grad():
        return model.ood(logits, features, model.temperature).numpy()


def shares(threshold: float, digits: np.ndarray, others: dict[str, np.ndarray], pooled: np.ndarray,
           real_scores: dict[str, np.ndarray]) -> dict[str, Any]:  # fmt: skip
    """What ``threshold`` calls "not a digit": wrongly among the MNIST test digits and the real digit sets, rightly
    among the held-out families (each, and ``pooled``: all of them but the digit-like letters)."""

    def share(scores: np.ndarray) -> float:
        return float(is_not_digit(scores, threshold).mean())

    return {
        "threshold": threshold,
        "test_not_digit": share(digits),
        "real_not_digit": {s: share(v) for s, v in real_scores.items()},
        "families_not_digit": {f: share(v) for f, v in others.items()},
        "all_held_out_not_digit": share(pooled),
    }


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
    val_logits, val_features, _ = split_outputs(model, dm, "val")
    curves = {}
    for method in OOD_METHODS:
        transformed = name in args.keep_transformed
        fit = fit_ood(model, dm, method, args.keep, transformed=transformed)
        digits = fitted_scores(model, test_logits, test_features)
        others = {family: fitted_scores(model, *outputs[family]) for family in sets}
        real_scores = {s: fitted_scores(model, *real_outputs[s]) for s in real}
        pooled = np.concatenate([others[f] for f in sets if f != DIGIT_LIKE_SET])
        curves[f"{name}: {method}"] = (digits, pooled)
        result["scores"][method] = {
            "families": {family: detection_summary(digits, others[family]) for family in sets},
            "all_held_out": detection_summary(digits, pooled),
            "at_threshold": {**shares(fit.threshold, digits, others, pooled, real_scores), "transformed": transformed},
        }
        if transformed:  # what the threshold on the clean validation digits would have called
            clean = keep_threshold(fitted_scores(model, val_logits, val_features), args.keep)
            result["scores"][method]["at_clean_threshold"] = shares(clean, digits, others, pooled, real_scores)
        print(f"{name} {method}: pooled AUROC {result['scores'][method]['all_held_out']['auroc']:.4f}", flush=True)
    if args.adapt:
        for s, (images, labels) in real.items():
            tuned = adapted(model, dm.normalize, images)
            logits, _ = network_outputs(tuned, dm.normalize, images)  # type: ignore[arg-type]
            result.setdefault("real_acc_adapted", {})[s] = float((logits.argmax(1).numpy() == labels).mean())
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["_curves"] = curves
    return result


def _cell(values: list[float], percent: bool, decimals: int | None = None) -> str:
    """The mean over seeds and, with two or more, the half-width of its 95% Student-t interval."""
    s = spread(values)
    scale, unit, digits = (100.0, "%", 1) if percent else (1.0, "", 3)
    digits = digits if decimals is None else decimals
    text = f"{s.mean * scale:.{digits}f}"
    if s.ci_low is not None and s.ci_high is not None:
        text += f"±{(s.ci_high - s.ci_low) / 2 * scale:.{digits}f}"
    return text + unit


def tables(results: dict[str, list[dict[str, Any]]], families: list[str], real: list[str]) -> str:
    """Three tables, one row per configuration and score, each cell the mean over the configuration's seeds with
    the half-width of its 95% interval: AUROC and FPR at 95% TPR per held-out family; then, at the fitted
    threshold, the shares called "not a digit"; then the accuracies."""
    columns = [*families, "all_held_out"]
    rows = [(name, method) for name in results for method in OOD_METHODS]

    def held_out(run: dict[str, Any], method: str, family: str) -> dict[str, Any]:
        scores = run["scores"][method]
        return scores["all_held_out"] if family == "all_held_out" else scores["families"][family]

    lines = ["AUROC / FPR at 95% TPR per held-out family (mean±95% interval over seeds)\n",
             "| config: score | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]  # fmt: skip
    for name, method in rows:
        cells = [
            _cell([held_out(r, method, f)["auroc"] for r in results[name]], False)
            + " / "
            + _cell([held_out(r, method, f)["fpr_at_95_tpr"] for r in results[name]], True)
            for f in columns
        ]
        lines.append(f"| {name}: {method} | " + " | ".join(cells) + " |")
    out = ["\n".join(lines)]
    at_threshold = ["MNIST test", *real, "all held out", "uniform_noise", "gaussian_noise"]
    lines = ['Called "not a digit" at the fitted threshold (digits: wrongly; others: rightly)\n',
             "| config: score (threshold) | " + " | ".join(at_threshold) + " |",
             "|---|" + "---|" * len(at_threshold)]  # fmt: skip
    for name, method in rows:
        for key in ("at_threshold", "at_clean_threshold"):
            runs = [r["scores"][method].get(key) for r in results[name]]
            if runs[0] is None:
                continue
            fitted = "clean digits" if key == "at_clean_threshold" or not runs[0]["transformed"] else "transformed"
            cells = [_cell([r["test_not_digit"] for r in runs], True, 2)]
            cells += [_cell([r["real_not_digit"][s] for r in runs], True) for s in real]
            cells.append(_cell([r["all_held_out_not_digit"] for r in runs], True))
            cells += [_cell([r["families_not_digit"][f] for r in runs], True) for f in at_threshold[-2:]]
            lines.append(f"| {name}: {method} ({fitted}) | " + " | ".join(cells) + " |")
    out.append("\n".join(lines))
    accuracy = ["seeds", "MNIST test", *real, *(f"{s}, BatchNorm adapted" for s in real)]
    lines = ["Accuracy (mean±95% interval over seeds)\n",
             "| config | " + " | ".join(accuracy) + " |", "|---|" + "---|" * len(accuracy)]  # fmt: skip
    for name, runs in results.items():
        cells = [str(len(runs)), _cell([r["test_acc"] for r in runs], True, 2)]
        cells += [_cell([r["real_acc"][s] for r in runs], True) for s in real]
        cells += [_cell([r["real_acc_adapted"][s] for r in runs], True) if "real_acc_adapted" in runs[0] else "-"
                  for s in real]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoints",
        nargs="+",
        metavar="NAME=CHECKPOINT",
        help="repeat a NAME for its other seeds: tables report "
        "the mean over a NAME's checkpoints and the half-width of its 95%% interval",
    )
    parser.add_argument("--data_dir", help="the MNIST data folder (default: each checkpoint's own)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per_family", type=int, default=500)
    parser.add_argument("--keep", type=float, default=0.99)
    parser.add_argument(
        "--keep_transformed",
        action="append",
        default=[],
        metavar="NAME",
        help="fit NAME's thresholds on the validation digits as its training transforms them (as its config's "
        "ood.keep_transformed does; repeat for each)",
    )
    parser.add_argument("--adapt", action="store_true", help="also re-estimate BatchNorm on the real digit sets")
    parser.add_argument("--figure", type=Path, help="also save the pooled ROC figure here (e.g. docs/ood_roc.png)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sets, missing = held_out_sets(args.per_family)
    for reason in missing:
        print(f"left out: {reason}")
    real = {name: make() for name, make in REAL_SETS.items()}
    results: dict[str, list[dict[str, Any]]] = {}
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        if not path:
            parser.error(f"{spec}: give NAME=CHECKPOINT (repeat a NAME for its other seeds)")
        results.setdefault(name, []).append(evaluate(name, path, args, sets, real))
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for runs in results.values():
        curves.update(runs[0]["_curves"])  # the figure: each configuration's first checkpoint
        for run in runs:
            del run["_curves"]
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
