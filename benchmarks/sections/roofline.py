"""Section ``roofline``: where a notebook network's training step goes, layer by layer, against the CPU's peak.

For each network (notebook B's at batch 128, notebook A's at batch 64), two loops over the same real batches:

- **bare**: a plain PyTorch loop, the module's own optimizer, the pixels normalized as the data module does;
- **Lightning**: the config's Trainer as ``python -m mnist_lit fit`` builds it (callbacks, TensorBoard logger,
  progress bar), over the same data; its validation is not run.

Module hooks time each layer's forward and backward inside the real step (so page faults, cache misses and
thread wake-ups count where they happen), and optimizer hooks time Adam's step. FLOPs are counted from the
shapes (a multiply-add is 2; the first convolution's backward computes no input gradient). What the hooks do not
cover is one row: in the bare loop the batch, the loss and ``zero_grad``; under Lightning also its loop, the
metrics' updates and ``self.log``. The hooks cost a few microseconds each; the totals are also given without them.

The peak is ``cores x clock x 32`` fp32 FLOP per cycle (two 256-bit FMA pipes of 8 lanes each, as on Zen 2);
pooling, ReLU and dropout do about one operation per value and are bound by memory, not arithmetic.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import REPO_ROOT, MNISTTensors, PreparedDataModule, bare_step, configured, quietly
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import Tensor, nn

from mnist_lit.callbacks import RestoreBestWeights
from mnist_lit.models import MNISTClassifier

#: The notebooks' configs, with the batch size each sets.
CONFIGS = {"compact": ("compact.yaml", 128), "keras_report": ("keras_report.yaml", 64)}
FLOP_PER_CYCLE = 32


def peak_gflops() -> tuple[float, str]:
    """The CPU's fp32 peak in GFLOP/s, and how it was reckoned."""
    mhz = 3000.0
    try:
        with open("/proc/cpuinfo") as info:
            mhz = max(float(line.split(":")[1]) for line in info if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        pass
    cores = len(os.sched_getaffinity(0))
    return cores * mhz / 1000 * FLOP_PER_CYCLE, f"{cores} cores x {mhz / 1000:.2f} GHz x {FLOP_PER_CYCLE} FLOP/cycle"


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """What this CPU reaches in practice: GFLOP/s of an ``n x n`` fp32 matrix product (best of ``repeats``), the
    most favourable shape there is for its vector units; the nominal peak assumes the base clock."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def layer_flops(layer: nn.Module, inputs: Tensor, output: Tensor) -> float:
    """Forward FLOPs of one layer on one batch (multiply-adds counted as 2; element-wise layers: one per value)."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return 2.0 * output.numel() * (layer.in_channels // layer.groups) * kh * kw
    if isinstance(layer, nn.Linear):
        return 2.0 * output.shape[0] * layer.in_features * layer.out_features
    return float(inputs.numel())


class LayerClock:
    """Wall time of each layer's forward and backward, and of the optimizer's step, inside real training steps."""

    def __init__(self, net: nn.Sequential, optimizer: torch.optim.Optimizer) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, float] = {}
        self.steps = 0
        self.on = False
        self._started: dict[str, float] = {}
        self.names = [f"{i} {type(layer).__name__}" for i, layer in enumerate(net)]
        self._handles = []
        for name, layer in zip(self.names, net, strict=True):
            if isinstance(layer, nn.Flatten):
                continue
            self._handles += [
                layer.register_forward_pre_hook(self._start(f"{name} forward")),
                layer.register_forward_hook(self._stop_forward(name, layer)),
                layer.register_full_backward_pre_hook(self._start(f"{name} backward")),
            ]
            if name != self.names[0]:  # no gradient flows out of the first layer: backward_done() ends its clock
                self._handles.append(layer.register_full_backward_hook(self._stop(f"{name} backward")))
        # Lightning runs the forward and backward inside optimizer.step(closure): Adam's own work starts when the
        # backward pass returns (backward_done) and ends with the step.
        self._handles.append(optimizer.register_step_post_hook(self._stop("optimizer step")))

    def _start(self, key: str) -> Any:
        def hook(*_: Any) -> None:
            self._started[key] = time.perf_counter()

        return hook

    def _stop(self, key: str) -> Any:
        def hook(*_: Any) -> None:
            if self.on and key in self._started:
                self.seconds[key] += time.perf_counter() - self._started.pop(key)

        return hook

    def _stop_forward(self, name: str, layer: nn.Module) -> Any:
        stop = self._stop(f"{name} forward")

        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            stop()
            if self.on and f"{name} forward" not in self.flops:
                forward = layer_flops(layer, args[0], output)
                self.flops[f"{name} forward"] = forward
                first = name.startswith("0 ")  # nothing upstream needs the first layer's input gradient
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    self.flops[f"{name} backward"] = forward * (1 if first else 2)
                else:
                    self.flops[f"{name} backward"] = forward

        return hook

    def backward_done(self) -> None:
        """The backward pass has returned: the first layer's backward (its weight gradient) ends, Adam's step starts."""
        self._stop(f"{self.names[0]} backward")()
        self._start("optimizer step")()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class StepWindow(Callback):
    """Times training batches ``warmup`` to ``warmup + steps`` (counted over epochs), and with ``hooked`` turns a
    LayerClock on for them."""

    def __init__(self, warmup: int, steps: int, hooked: bool = True) -> None:
        self.warmup, self.steps, self.hooked = warmup, steps, hooked
        self.clock: LayerClock | None = None
        self.elapsed = 0.0
        self.batches = 0
        self._t0 = 0.0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.hooked:
            self.clock = LayerClock(pl_module.net, trainer.optimizers[0])

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.batches == self.warmup:
            if self.clock is not None:
                self.clock.on = True
            self._t0 = time.perf_counter()

    def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
        if self.clock is not None:
            self.clock.backward_done()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches += 1
        if self.batches == self.warmup + self.steps:
            self.elapsed = time.perf_counter() - self._t0
            if self.clock is not None:
                self.clock.on, self.clock.steps = False, self.steps


def batches(dm: PreparedDataModule) -> Iterator[tuple[Tensor, Tensor]]:
    """The data module's training batches, epoch after epoch."""
    loader = dm.train_dataloader()
    while True:
        yield from loader


def bare_clocked(model: MNISTClassifier, dm: PreparedDataModule, warmup: int, steps: int) -> tuple[LayerClock, float]:
    """The bare loop's layer times over ``steps`` steps after ``warmup``, and the window's wall time."""
    optimizer = model.configure_optimizers()
    clock = LayerClock(model.net, optimizer)  # type: ignore[arg-type]
    feed = batches(dm)
    for _ in range(warmup):
        bare_step(model, optimizer, dm, *next(feed))
    clock.on = True
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = next(feed)
        loss = F.cross_entropy(model(dm.normalize(images)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock.backward_done()
        optimizer.step()
    elapsed = time.perf_counter() - start
    clock.on, clock.steps = False, steps
    clock.remove()
    return clock, elapsed


def unhooked_seconds(model: MNISTClassifier, dm: PreparedDataModule, warmup: int, steps: int) -> float:
    """Seconds per step of the bare loop without hooks."""
    optimizer = model.configure_optimizers()
    feed = batches(dm)
    for _ in range(warmup):
        bare_step(model, optimizer, dm, *next(feed))
    start = time.perf_counter()
    for _ in range(steps):
        bare_step(model, optimizer, dm, *next(feed))
    return (time.perf_counter() - start) / steps


def without_validation(callbacks: list[Callback]) -> list[Callback]:
    """The callbacks less those that need a validation metric (early stopping, restoring the best weights), which
    act at an epoch's end, outside the training steps timed here."""
    return [cb for cb in callbacks if not isinstance(cb, (EarlyStopping, RestoreBestWeights))]


def lightning_clocked(config: Path, data: MNISTTensors, batch: int, warmup: int, steps: int) -> tuple[Any, float]:
    """The config's own Trainer and network over the window; (StepWindow, seconds per step of a timed epoch
    without hooks, from the config's training pass)."""
    window = StepWindow(warmup, steps)
    with tempfile.TemporaryDirectory(prefix="mnist_lit_roofline_") as logs, quietly():
        overrides = [
            "--trainer.max_epochs", "1000", "--trainer.max_steps", str(warmup + steps),
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        ]  # fmt: skip
        timer = StepWindow(warmup, steps, hooked=False)
        for callback in (window, timer):
            cli = configured(config, Path(logs), *overrides)
            cli.trainer.callbacks = [*without_validation(cli.trainer.callbacks), callback]
            cli.trainer.fit(cli.model, datamodule=PreparedDataModule(data, batch))
    return window, timer.elapsed / steps


def bench_roofline(data: MNISTTensors, steps: int, repeats: int) -> list[dict[str, Any]]:
    """Per network and layer: ms per step in the bare loop and under Lightning, FLOPs, GFLOP/s, share of peak."""
    peak, how = peak_gflops()
    warmup = max(5, steps // 10)
    rows: list[dict[str, Any]] = []
    for network, (config_name, batch) in CONFIGS.items():
        config = REPO_ROOT / "configs" / config_name
        bare_runs, lit_runs, bare_plain, lit_plain = [], [], [], []
        for _ in range(repeats):  # interleaved
            torch.manual_seed(0)
            cli_model = configured(config, Path(tempfile.gettempdir()), "--trainer.logger", "false").model
            dm = PreparedDataModule(data, batch)
            dm.setup("fit")
            bare_runs.append(bare_clocked(cli_model, dm, warmup, steps))
            bare_plain.append(unhooked_seconds(cli_model, dm, warmup, steps))
            window, plain = lightning_clocked(config, data, batch, warmup, steps)
            lit_runs.append((window.clock, window.elapsed))
            lit_plain.append(plain)
        plain = statistics.median(bare_plain), statistics.median(lit_plain)
        rows += _rows(network, batch, bare_runs, lit_runs, *plain, peak)
    rows.append({"network": "the CPU", "operator": f"fp32 peak: {how}", "bare GFLOP/s": peak})
    rows.append({"network": "the CPU", "operator": "a 1024 x 1024 fp32 matmul", "bare GFLOP/s": matmul_gflops()})
    return rows


def _rows(
    network: str,
    batch: int,
    bare: list[tuple[LayerClock, float]],
    lit: list[tuple[LayerClock, float]],
    bare_plain: float,
    lit_plain: float,
    peak: float,
) -> list[dict[str, Any]]:

    def median_ms(runs: list[tuple[LayerClock, float]], key: str) -> float:
        return statistics.median(clock.seconds.get(key, 0.0) / clock.steps for clock, _ in runs) * 1000

    def rest_ms(runs: list[tuple[LayerClock, float]]) -> float:
        return statistics.median((t - sum(c.seconds.values())) / c.steps for c, t in runs) * 1000

    flops = bare[0][0].flops
    keys = [*(k for k in flops if k in bare[0][0].seconds), "optimizer step"]
    lit_total = statistics.median(t / c.steps for c, t in lit) * 1000
    out = []
    for key in [*keys, "the rest"]:
        b = rest_ms(bare) if key == "the rest" else median_ms(bare, key)
        lt = rest_ms(lit) if key == "the rest" else median_ms(lit, key)
        f = flops.get(key)
        arithmetic = key.split(" ")[1] in ("Conv2d", "Linear") if key[0].isdigit() else False
        out.append({
            "network": f"{network} (batch {batch})", "operator": key,
            "MFLOP": f / 1e6 if f and arithmetic else None,
            "bare ms": b, "bare GFLOP/s": f / b / 1e6 if f and arithmetic and b else None,
            "Lightning ms": lt, "Lightning GFLOP/s": f / lt / 1e6 if f and arithmetic and lt else None,
            "share of Lightning step": lt / lit_total,
            "% of peak (Lightning)": 100 * f / lt / 1e6 / peak if f and arithmetic and lt else None,
        })  # fmt: skip
    total_flops = sum(v for k, v in flops.items() if k.split(" ")[1] in ("Conv2d", "Linear"))
    out.append({
        "network": f"{network} (batch {batch})", "operator": "step, without hooks", "MFLOP": total_flops / 1e6,
        "bare ms": bare_plain * 1000, "bare GFLOP/s": total_flops / bare_plain / 1e9,
        "Lightning ms": lit_plain * 1000, "Lightning GFLOP/s": total_flops / lit_plain / 1e9,
        "share of Lightning step": 1.0, "% of peak (Lightning)": 100 * total_flops / lit_plain / 1e9 / peak,
    })  # fmt: skip
    return out
