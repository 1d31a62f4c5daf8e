"""``python -m mnist_lit sweep --config C --seeds 0-4 [fit options]``: one ``fit`` (with its test) per seed, each
in ``lightning_logs/<name>/sweep_N/seed_K/``, and after each seed the table and ``summary.json`` of all so far.

Started again with ``--sweep_dir`` it continues: finished seeds are skipped, an interrupted one resumes from its
``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from mnist_lit.cli.fit_runs import FitConfig, run_fit
from mnist_lit.errors import UserError
from mnist_lit.experiments.figures import save_png, seed_accuracies
from mnist_lit.experiments.seeds import parse_seeds
from mnist_lit.experiments.stats import Spread
from mnist_lit.experiments.summary import SUMMARY_NAME, build_summary, format_table, write_summary

FIGURE_NAME = "seeds.png"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lit sweep",
        description="Run `fit` (and its test) once per seed; summarize test accuracy with its spread and 95% CI. "
        "Any other option is passed to `fit` (e.g. --data.data_dir, --trainer.max_epochs).",
    )
    parser.add_argument("--config", action="append", default=[], help="the fit config (repeatable, as for fit)")
    parser.add_argument("--seeds", help="0-4 (a range), 0,3,7 (a list) or 5 (a count: seeds 0 to 4)")
    parser.add_argument(
        "--sweep_dir", type=Path, help="continue this sweep: finished seeds are skipped, a stopped one resumes"
    )
    return parser


def main(argv: list[str]) -> None:
    args, fit_options = build_parser().parse_known_args(argv)
    if args.sweep_dir is not None:
        configs, fit_options, seeds, rows = continued(args.sweep_dir, args.config, fit_options, args.seeds)
        folder = args.sweep_dir
    else:
        if not args.config or not args.seeds:
            raise UserError("sweep needs --config and --seeds (or --sweep_dir to continue a sweep).")
        configs, seeds, rows = args.config, parse_seeds(args.seeds), []
        folder = None
    fit = FitConfig(configs, fit_options)
    logger = fit.logger_args()
    if folder is None:
        folder = new_sweep_folder(Path(logger.save_dir) / (logger.get("name") or ""))
    print(f"Sweep folder: {folder}", flush=True)
    write_summary(folder, build_summary(configs, fit_options, seeds, rows))
    done = {r["seed"] for r in rows}
    for seed in seeds:
        if seed in done:
            print(f"Seed {seed}: finished before, skipped.", flush=True)
            continue
        rows.append(run_seed(folder, seed, fit.args))
        summary = build_summary(configs, fit_options, seeds, rows)
        write_summary(folder, summary)
        save_figure(folder, summary)
        print(f"\n{folder / SUMMARY_NAME} after seed {seed}:\n{format_table(summary)}\n", flush=True)
    summary = build_summary(configs, fit_options, seeds, rows)
    print(f"Sweep {folder}: {len(rows)} seed(s)\n{format_table(summary)}")


def new_sweep_folder(parent: Path) -> Path:
    """``parent/sweep_N`` for the first N free, created here (so two sweeps started at once never share one)."""
    parent.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        folder = parent / f"sweep_{n}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1


def continued(
    folder: Path, configs: list[str], fit_options: list[str], seeds_text: str | None
) -> tuple[list[str], list[str], list[int], list[dict[str, Any]]]:
    """The plan and finished rows of the sweep in ``folder``; options given again must be the ones it was run with."""
    file = folder / SUMMARY_NAME
    if not file.is_file():
        raise UserError(f"--sweep_dir {folder}: no {SUMMARY_NAME} there, so it is not a sweep to continue.")
    try:
        summary = json.loads(file.read_text())
        plan = (summary["config"], summary["fit_args"], summary["seeds"], summary["runs"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"--sweep_dir {folder}: {file} is not a sweep summary ({err}); start a new sweep.") from err
    for what, given, recorded in (
        ("--config", configs, summary["config"]),
        ("fit options", fit_options, summary["fit_args"]),
        ("--seeds", parse_seeds(seeds_text) if seeds_text else [], summary["seeds"]),
    ):
        if given and list(given) != list(recorded):
            raise UserError(
                f"--sweep_dir {folder} was run with {what} {recorded}, not {given}: give the same, or none."
            )
    return plan


def run_seed(folder: Path, seed: int, fit_args: list[str]) -> dict[str, Any]:
    """Fit and test one seed in ``folder/seed_K`` (resuming its last.ckpt if a previous attempt left one)."""
    run_dir = folder / f"seed_{seed}"
    args = [
        *fit_args,
        f"--seed_everything={seed}",
        f"--data.seed={seed}",
        "--test_after_fit=true",
        f"--trainer.logger.init_args.save_dir={folder}",
        "--trainer.logger.init_args.name=",
        f"--trainer.logger.init_args.version={run_dir.name}",
    ]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        print(f"Seed {seed}: resuming from {last}", flush=True)
        args.append(f"--ckpt_path={last}")
    else:
        print(f"Seed {seed}: fit in {run_dir}", flush=True)
    start = time.perf_counter()
    cli = run_fit(args)
    wall = time.perf_counter() - start
    metrics = cli.trainer.callback_metrics
    if "test/acc" not in metrics:
        raise UserError(f"seed {seed}: the run logged no test/acc; the sweep needs its test after fit.")
    report = run_dir / "metrics.json"
    seconds = json.loads(report.read_text()).get("seconds_per_epoch") if report.is_file() else None
    return {
        "seed": seed,
        "run_dir": run_dir.name,
        "test_acc": float(metrics["test/acc"]),
        "test_loss": float(metrics["test/loss"]),
        "epochs_run": cli.trainer.current_epoch,
        "seconds": round(sum(seconds), 3) if seconds else round(wall, 3),
    }


def save_figure(folder: Path, summary: dict[str, Any]) -> None:
    runs = summary["runs"]
    acc = Spread(**summary["test_acc"])
    title = f"{', '.join(Path(c).name for c in summary['config'])}: {acc.n} seed(s)"
    save_png(
        seed_accuracies([r["seed"] for r in runs], [r["test_acc"] for r in runs], acc, title), folder / FIGURE_NAME
    )
