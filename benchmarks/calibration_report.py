"""Test-set calibration of checkpoints, before and after temperature scaling, and their "not sure" answers.

For each ``NAME=CHECKPOINT`` (a checkpoint from ``fit``, or from ``calibrate``, which holds a temperature and a
threshold): the test NLL, ECE and MCE (15 bins, see :mod:`mnist_lit.reporting.calibration`) at T = 1 and at the
checkpoint's T; the fraction of test images marked unsure at its threshold and the error rate of the rest. Writes a
markdown table, a risk-coverage figure of all of them, and a reliability diagram of each (before and after).

    python benchmarks/calibration_report.py --data_dir /work/trainrun/data --out runs/ \\
        keras_report=k-calibrated.ckpt fast=lightning_logs/fast/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mnist_lit.cli.calibrate import datamodule_for
from mnist_lit.reporting import plots
from mnist_lit.reporting.calibration import reliability_bins, risk_coverage, selective_summary, top_label
from mnist_lit.training.calibrate import nll_and_calibration, split_logits
from mnist_lit.training.checkpoints import load_trained_network, read_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves, marks, records = [], {}, {}, {}
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        checkpoint = read_checkpoint(path)
        datamodule = datamodule_for(checkpoint, args.data_dir)
        datamodule.prepare_data()
        datamodule.setup("test")
        trained = load_trained_network(path)
        temperature = float(trained.model.temperature)
        threshold = float(trained.model.unsure_threshold) or None
        logits, labels = split_logits(trained.model, datamodule, "test")
        before = nll_and_calibration(logits, labels, 1.0)
        after = nll_and_calibration(logits, labels, temperature) if temperature != 1.0 else None
        probs = (logits.double() / temperature).softmax(dim=1).numpy()
        conf, correct = top_label(probs, labels.numpy())
        selective = selective_summary(conf, correct, threshold)
        coverage, risk, _ = risk_coverage(conf, correct)
        curves[name] = (coverage, risk)
        if threshold:
            marks[name] = (1 - selective["unsure_fraction"], selective["error_rate_answered"])
        for label, t in (("before", 1.0), ("after", temperature)) if after else (("before", 1.0),):
            c, k = top_label((logits.double() / t).softmax(dim=1).numpy(), labels.numpy())
            fig = plots.reliability_diagram(reliability_bins(c, k), f"{name}: test set, T = {t:.3f}")
            fig.savefig(args.out / f"reliability_{name}_{label}.png", dpi=80)
        records[name] = {
            "checkpoint": path,
            "val_split": datamodule.hparams.val_split,
            "temperature": temperature,
            "unsure_threshold": threshold,
            "test_before": before,
            "test_after": after,
            "test_selective": selective,
        }
        rows.append(_row(name, datamodule.hparams.val_split, temperature, before, after, selective))
        print(rows[-1], flush=True)
    plots.risk_coverage_figure(curves, marks).savefig(args.out / "risk_coverage.png", dpi=90)
    header = (
        "| config | validation | T | test accuracy | test NLL before | after | test ECE before | after | "
        "test MCE before | after | not-sure threshold | test unsure | error rate of the rest (all) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    (args.out / "calibration_table.md").write_text(header + "\n".join(rows) + "\n")
    (args.out / "calibration.json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"Wrote {args.out}/calibration_table.md, calibration.json, risk_coverage.png, reliability_*.png")


def _row(name: str, split: str, t: float, before: dict, after: dict | None, sel: dict) -> str:
    dash = "–"
    a = after or {}
    fmt = lambda key, d: f"{d[key]:.4f}" if key in d else dash  # noqa: E731
    threshold = f"{sel['threshold']:.4f}" if sel["threshold"] else "none (refused: validation is the test set)"
    unsure = f"{sel['unsure_fraction']:.2%}" if sel["threshold"] else dash
    rest = (
        f"{sel['error_rate_answered']:.2%} ({sel['error_rate_all']:.2%})" if sel["threshold"] else
        f"– ({sel['error_rate_all']:.2%})"
    )  # fmt: skip
    return (
        f"| {name} | {split} | {t:.4f} | {before['accuracy']:.2%} | {fmt('nll', before)} | {fmt('nll', a)} | "
        f"{fmt('ece', before)} | {fmt('ece', a)} | {fmt('mce', before)} | {fmt('mce', a)} | {threshold} | "
        f"{unsure} | {rest} |"
    )


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
