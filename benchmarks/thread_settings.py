"""Training-step time under OpenMP thread settings, each in a fresh process (the runtime reads them at start).

    python benchmarks/thread_settings.py [--rounds 3] [--steps 60]

The fast network (batch 256) and the report network (batch 64), channels-last, fused Adam, random data. Settings:
torch's default (one thread per core, OpenMP's default wait policy), ``OMP_WAIT_POLICY=ACTIVE`` (threads spin
between parallel regions instead of sleeping), ``PASSIVE``, and a single thread. Interleaved rounds, medians;
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SETTINGS = {
    "default": {},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
}
NETWORKS = {"fast (batch 256)": ("FastCNN", 256), "report (batch 64)": ("KerasReportCNN", 64)}


def step_time(name: str, batch: int, steps: int) -> float:
    """Milliseconds per training step of the network class ``name`` at ``batch`` images, in this process."""
    import torch
    from step_variants import step_timer

    import mnist_lit.models as models

    torch.manual_seed(0)
    model = getattr(models, name)(channels_last=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    images, labels = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    return step_timer(model, images, labels, optimizer)(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        result = {label: step_time(name, batch, args.steps) for label, (name, batch) in NETWORKS.items()}
        print(json.dumps({**result, "threads": torch.get_num_threads()}))
        return
    times: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, env in SETTINGS.items():
            command = [sys.executable, __file__, "--child", "--steps", str(args.steps)]
            out = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True)
            times[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{os.cpu_count()} CPUs, {args.rounds} interleaved rounds of {args.steps} steps, medians\n")
    print("| setting | threads | " + " | ".join(f"{n}, ms per step" for n in NETWORKS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in NETWORKS) + " |")
    for name, runs in times.items():
        cells = [f"{statistics.median(r[n] for r in runs):.1f}" for n in NETWORKS]
        print(f"| {name} | {runs[0]['threads']:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
