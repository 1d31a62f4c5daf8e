"""``python -m mnist_lit compare SWEEP_A SWEEP_B``: whether two sweeps' mean test accuracies differ beyond seed noise
(the difference, Welch's 95% interval of it and Welch's t-test p-value, from scipy)."""

from __future__ import annotations

import argparse
from typing import Any

from mnist_lit.errors import UserError
from mnist_lit.experiments.stats import compare, sentence, spread
from mnist_lit.experiments.summary import accuracies, read_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lit compare",
        description="Compare the test accuracies of two sweeps (their folders or summary.json files).",
    )
    parser.add_argument("a", help="sweep A: lightning_logs/<name>/sweep_N or its summary.json")
    parser.add_argument("b", help="sweep B")
    return parser


def describe(label: str, where: str, summary: dict[str, Any]) -> str:
    s = spread(accuracies(summary))
    ci = "-" if s.ci_low is None or s.ci_high is None else f"{s.ci_low * 100:.3f}% to {s.ci_high * 100:.3f}%"
    sd = "-" if s.sd is None else f"{s.sd * 100:.3f}%"
    configs = ", ".join(summary["config"])
    return f"{label}: {where} ({configs}): {s.n} seeds, mean {s.mean * 100:.3f}%, sd {sd}, 95% CI {ci}"


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    a, b = read_summary(args.a), read_summary(args.b)
    for name, summary in (("A", a), ("B", b)):
        if len(summary["runs"]) < 2:
            raise UserError(
                f"sweep {name} has {len(summary['runs'])} finished seed; a comparison needs at least 2 a side."
            )
    c = compare(accuracies(a), accuracies(b))
    print(describe("A", args.a, a))
    print(describe("B", args.b, b))
    print(
        f"B - A: {c.difference * 100:+.3f}% (95% CI {c.ci_low * 100:+.3f}% to {c.ci_high * 100:+.3f}%, Welch); "
        f"Welch's t-test p = {c.p_value:.3g}"
    )
    print(sentence(c))
