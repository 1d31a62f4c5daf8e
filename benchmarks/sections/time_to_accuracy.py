"""Section ``tta`` (time to accuracy): each config's whole ``fit`` command as a user runs it, in a fresh process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import run_fit


def bench_time_to_accuracy(configs: list[Path], seeds: list[int] | None, data_dir: Path) -> list[dict[str, Any]]:
    """Each config's whole ``fit`` command, as shipped or once per seed (``--seed_everything`` and ``--data.seed``)."""
    rows = []
    for config in configs:
        for seed in seeds if seeds is not None else [None]:
            overrides = () if seed is None else ("--seed_everything", str(seed), "--data.seed", str(seed))
            row = run_fit(config, data_dir, *overrides)
            rows.append({"config": row["config"], "seed": "as shipped" if seed is None else seed,
                         "test_acc": row["test_acc"], "epochs": row["epochs"], "fit_s": row["fit_s"],
                         "wall_s": row["wall_s_from_process_start"], "peak_rss_mib": row["peak_rss_mib"]})  # fmt: skip
    return rows
