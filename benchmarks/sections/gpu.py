"""Section ``gpu``: the notebook epochs and ``configs/fast.yaml`` to 99% on a CUDA device, by variant: fp32 as shipped,
``data.keep_on_device``, bf16 autocast, and ``torch.compile`` of the network (default mode, and ``reduce-overhead``,
which replays CUDA graphs).

Without a CUDA device the runner skips it and says so; under ``--smoke`` it runs the same code on the CPU (tiny
synthetic data, 2 epochs, fewer variants, compilation with dynamo's ``eager`` backend, which traces but generates
no code) so that CI keeps it working. Each run's result is printed as it ends, so a run cut short by a device's time
limit still shows what it measured."""

from __future__ import annotations

import gc
import statistics
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import REPO_ROOT, MNISTTensors, configured, pass_timer, quietly, run_fit

from mnist_lit.callbacks import EpochTimer
from mnist_lit.cli.lightning_cli import MNISTLitCLI
from mnist_lit.data.datamodule import MNISTDataModule

NOTEBOOK_CONFIGS = ("compact", "keras_report")
EPOCHS = 3  # the first includes warm-up (cuDNN's kernel choice, compilation), so it is reported apart
FAST = REPO_ROOT / "configs" / "fast.yaml"


@dataclass(frozen=True)
class Variant:
    """One way to run a config: command-line overrides, and how the network is compiled (None: eager)."""

    name: str
    overrides: tuple[str, ...] = ()
    compile_mode: str | None = None


KEEP = ("--data.keep_on_device", "true")
BF16 = ("--trainer.precision", "bf16-mixed")
VARIANTS = (
    Variant("fp32 as shipped"),
    Variant("keep_on_device", KEEP),
    Variant("bf16-mixed", BF16),
    Variant("keep_on_device + bf16-mixed", KEEP + BF16),
    Variant("torch.compile", compile_mode="default"),
    Variant("torch.compile reduce-overhead", compile_mode="reduce-overhead"),
)
EPOCH_COLUMNS = ("first_epoch_s", "later_epoch_s", "later_train_pass_s", "speedup", "val_acc", "peak_gpu_mib",
                 "epochs", "error")  # fmt: skip
FAST_COLUMNS = ("fit_s", "wall_s", "epochs", "test_acc", "min_test_acc", "runs", "error")
FAST_PRECISIONS = ("32-true", "bf16-mixed")  # fast.yaml keeps its batches on the device already


class FilesDataModule(MNISTDataModule):
    """The config's own datamodule (its split, batch size, ``keep_on_device``) over a folder whose files the
    benchmark has already acquired and verified (the real MNIST), or written itself (``--smoke``'s synthetic
    digits, which MNIST's checksums would refuse)."""

    def prepare_data(self) -> None:
        """Nothing to acquire or verify: see the class docstring."""


def no_gpu() -> str:
    """The section's text where no CUDA device is available."""
    build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a build without CUDA"
    return (
        f"skipped: no GPU available (torch.cuda.is_available() is False; torch {torch.__version__}, {build}). "
        "Run it on a machine with a CUDA device; `--smoke` runs the same code on the CPU."
    )


def device_name(accelerator: str) -> str:
    """The GPU's name, or what ran instead."""
    return torch.cuda.get_device_name() if accelerator == "gpu" else "cpu (smoke)"


def _error_text(error: BaseException, last_line: bool = False) -> str:
    """A failed variant's error in one line, for the table (its traceback is printed): the message's first line, or
    with ``last_line`` its last (a failed command's log ends with the child's exception)."""
    lines = [line for line in str(error).splitlines() if line.strip()] or [""]
    return f"{type(error).__name__}: {(lines[-1] if last_line else lines[0]).strip()[:300]}"


def fit_in_process(
    config: Path, data: MNISTTensors, accelerator: str, epochs: int, variant: Variant, smoke: bool, test: bool = False
) -> dict[str, Any]:
    """``fit`` of ``config`` as the CLI builds it (callbacks, logger, checkpoints, its datamodule over ``data``'s
    files), with ``variant`` applied; seconds of each epoch by the package's own clock (validation included) and of
    each training pass, the last validation (and, with ``test``, test) accuracy, the peak GPU memory."""
    with tempfile.TemporaryDirectory(prefix="mnist_lit_bench_logs_") as logs, quietly():
        args = ["--trainer.accelerator", accelerator, "--trainer.devices", "1", "--trainer.max_epochs", str(epochs),
                "--data.data_dir", str(data.torchvision_root), *variant.overrides]  # fmt: skip
        cli: MNISTLitCLI = configured(config, Path(logs), *args)
        # The config's datamodule settings (jsonargparse adds its own private `_instantiator`).
        dm = FilesDataModule(**{k: v for k, v in cli.datamodule.hparams.items() if not k.startswith("_")})
        torch._dynamo.reset()  # nothing compiled by an earlier variant is reused
        if variant.compile_mode is not None:
            # Under --smoke, dynamo traces the network but generates no code: the compile path stays checked on the
            # CPU, without a C++ toolchain or a minute of inductor per variant.
            options = {"backend": "eager"} if smoke else {"mode": variant.compile_mode}
            cli.model.net.compile(**options)  # in place: the network keeps its type and its state_dict keys
        if torch.cuda.is_available():
            gc.collect()  # an earlier variant's model and data, so that the peak is this variant's own
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        cli.trainer.fit(cli.model, datamodule=dm)
        val_acc = cli.trainer.callback_metrics.get("val/acc")
        test_acc = None
        if test:
            (result,) = cli.trainer.test(cli.model, datamodule=dm, verbose=False)
            test_acc = result["test/acc"]
    (epoch_timer,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, EpochTimer)]
    return {
        "epoch_s": list(epoch_timer.seconds),
        "train_pass_s": list(pass_timer(cli.trainer).seconds),
        "val_acc": None if val_acc is None else float(val_acc),
        "test_acc": test_acc,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if accelerator == "gpu" else None,
    }


def _later(seconds: list[float]) -> float | None:
    """The median of the epochs after the first (None after a single epoch)."""
    return statistics.median(seconds[1:]) if len(seconds) > 1 else None


def _smoke_variants(config: str) -> tuple[Variant, ...]:
    """Under --smoke, fewer fits through the same code: on the first config fp32, both overrides at once and one
    compile variant (with the ``eager`` backend the modes do not differ); the others as shipped."""
    if config != NOTEBOOK_CONFIGS[0]:
        return VARIANTS[:1]
    return tuple(v for v in VARIANTS if v.name in ("fp32 as shipped", "keep_on_device + bf16-mixed", "torch.compile"))


def bench_gpu_epochs(data: MNISTTensors, smoke: bool) -> list[dict[str, Any]]:
    """Each notebook config for a few epochs, once per variant: the first epoch's seconds (warm-up, compilation)
    apart from the median of the later ones, by the package's epoch clock (validation included) and by the training
    pass alone; ``speedup`` is fp32-as-shipped's later epoch over the variant's. A variant that fails is a row with
    its error."""
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    epochs = 2 if smoke else EPOCHS
    rows = []
    for name in NOTEBOOK_CONFIGS:
        baseline = None
        for variant in _smoke_variants(name) if smoke else VARIANTS:
            row: dict[str, Any] = {"config": name, "variant": variant.name, "device": device_name(accelerator),
                                   **dict.fromkeys(EPOCH_COLUMNS)}  # fmt: skip
            try:
                run = fit_in_process(REPO_ROOT / "configs" / f"{name}.yaml", data, accelerator, epochs, variant, smoke)
            except Exception as error:  # a variant that does not work is a finding, not a crash
                print(f"{name}, {variant.name}: failed\n{traceback.format_exc()}")
                rows.append({**row, "error": _error_text(error)})
                continue
            later = _later(run["epoch_s"])
            print(f"{name}, {variant.name}: epochs {', '.join(f'{s:.2f}' for s in run['epoch_s'])} s", flush=True)
            if variant.name == "fp32 as shipped":
                baseline = later
            rows.append(
                {**row, "first_epoch_s": run["epoch_s"][0], "later_epoch_s": later,
                 "later_train_pass_s": _later(run["train_pass_s"]),
                 "speedup": baseline / later if baseline and later else None,
                 "val_acc": run["val_acc"], "peak_gpu_mib": run["peak_gpu_mib"], "epochs": len(run["epoch_s"]),
                 "error": None}
            )  # fmt: skip
    return rows


def bench_gpu_to_99(data: MNISTTensors, repeats: int, smoke: bool) -> list[dict[str, Any]]:
    """``configs/fast.yaml``'s whole ``python -m mnist_lit fit --trainer.accelerator gpu`` in a fresh process, fp32
    and bf16-mixed (its batches kept on the device): the fit's seconds by its own epoch clock, process start to
    exit, test accuracy; medians over ``repeats``, interleaved. Under ``--smoke`` the fit runs in this process on the
    synthetic digits (a fresh process would verify MNIST's checksums and refuse them), and ``wall_s`` is empty."""
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in FAST_PRECISIONS}
    errors: dict[str, str] = {}
    for _ in range(1 if smoke else repeats):  # interleaved, so that drifting load hits both precisions alike
        for precision in FAST_PRECISIONS:
            if precision in errors:
                continue
            precision_args = ("--trainer.precision", precision)
            try:
                if smoke:
                    run = fit_in_process(
                        FAST, data, accelerator, 1, Variant(precision, precision_args), smoke, test=True
                    )
                    runs[precision].append({"fit_s": sum(run["epoch_s"]), "wall_s_from_process_start": None,
                                            "test_acc": run["test_acc"], "epochs": len(run["epoch_s"])})  # fmt: skip
                else:
                    devices = ("--trainer.accelerator", accelerator, "--trainer.devices", "1")
                    runs[precision].append(run_fit(FAST, data.torchvision_root, *devices, *precision_args))
                print(f"configs/fast.yaml, {precision}: fit {runs[precision][-1]['fit_s']:.2f} s", flush=True)
            except Exception as error:  # reported as the precision's row
                print(f"configs/fast.yaml, {precision}: failed\n{traceback.format_exc()}")
                errors[precision] = _error_text(error, last_line=not smoke)
    rows = []
    for precision, done in runs.items():
        row: dict[str, Any] = {"config": "configs/fast.yaml", "precision": precision, "keep_on_device": True,
                               "device": device_name(accelerator), **dict.fromkeys(FAST_COLUMNS)}  # fmt: skip
        if not done:
            rows.append({**row, "error": errors.get(precision)})
            continue
        walls = [r["wall_s_from_process_start"] for r in done if r["wall_s_from_process_start"] is not None]
        accs = [r["test_acc"] for r in done]
        rows.append(
            {**row, "fit_s": statistics.median(r["fit_s"] for r in done),
             "wall_s": statistics.median(walls) if walls else None, "epochs": done[0]["epochs"],
             "test_acc": statistics.median(accs), "min_test_acc": min(accs), "runs": len(done),
             "error": errors.get(precision)}
        )  # fmt: skip
    return rows
