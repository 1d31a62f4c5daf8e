"""A sweep's ``summary.json``: one row per finished seed and the spread of each, written atomically after each seed."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_lit.errors import UserError
from mnist_lit.experiments.stats import spread
from mnist_lit.utils.io import atomic_write_json

SUMMARY_NAME = "summary.json"


def build_summary(
    config: Sequence[str], fit_args: Sequence[str], seeds: Sequence[int], rows: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The contents of ``summary.json``: what was run, each finished seed's row, and their spread."""
    rows = sorted(rows, key=lambda r: seeds.index(r["seed"]) if r["seed"] in seeds else len(seeds))
    summary: dict[str, Any] = {
        "config": list(config),
        "fit_args": list(fit_args),
        "seeds": list(seeds),
        "finished": len(rows),
        "runs": list(rows),
    }
    for key in ("test_acc", "test_loss"):
        summary[key] = spread([r[key] for r in rows]).as_dict() if rows else None
    return summary


def write_summary(folder: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``folder/summary.json`` atomically: a reader never sees half of it, a kill never leaves it broken."""
    path = folder / SUMMARY_NAME
    atomic_write_json(path, summary)
    return path


def read_summary(path: str | Path) -> dict[str, Any]:
    """A sweep's summary, from its folder or its ``summary.json``; a :class:`UserError` naming what is wrong."""
    path = Path(path)
    file = path / SUMMARY_NAME if path.is_dir() else path
    if not file.is_file():
        raise UserError(
            f"{path}: no {SUMMARY_NAME} there; give a sweep folder (lightning_logs/<name>/sweep_N) or its "
            f"{SUMMARY_NAME}."
        )
    try:
        summary = json.loads(file.read_text())
        accuracies = [float(r["test_acc"]) for r in summary["runs"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{file}: not a sweep summary ({err}).") from err
    if not accuracies:
        raise UserError(f"{file}: the sweep has no finished seed yet.")
    return summary


def accuracies(summary: Mapping[str, Any]) -> list[float]:
    """The test accuracy of each finished seed."""
    return [float(r["test_acc"]) for r in summary["runs"]]


def format_table(summary: Mapping[str, Any]) -> str:
    """The per-seed table and the spread lines, as printed after each seed."""

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [f"{'seed':>6}  {'test acc':>9}  {'test loss':>9}  {'epochs':>6}  {'seconds':>8}"]
    for r in summary["runs"]:
        lines.append(
            f"{r['seed']:>6}  {r['test_acc'] * 100:>8.2f}%  {r['test_loss']:>9.4f}  {cell(r['epochs_run'], '>6')}  "
            f"{cell(r['seconds'], '>8.1f')}"
        )
    acc = summary.get("test_acc")
    if acc:
        pct = lambda v: "-" if v is None else f"{v * 100:.3f}%"  # noqa: E731
        lines.append(
            f"test accuracy over {acc['n']} seed(s): mean {pct(acc['mean'])}, sd {pct(acc['sd'])}, "
            f"min {pct(acc['min'])}, max {pct(acc['max'])}, "
            f"95% CI of the mean (Student t) {pct(acc['ci_low'])} to {pct(acc['ci_high'])}"
        )
    return "\n".join(lines)
