"""What tests share: tiny, learnable MNIST-shaped IDX files made on the fly, the real files when present, ways to run
the CLI in-process and read what it printed and wrote, quick trainers, and pictures sent to the web API."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback
from PIL import Image

from mnist_lit.cli import main
from mnist_lit.data import idx
from mnist_lit.data.idx import IdxFileSpec, encode_idx

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The real MNIST files for the tests marked ``real_data``: ``$MNIST_LIT_REAL_RAW``, else the project's own
#: ``data/MNIST/raw`` once a first run has fetched them there. Each file may be there as IDX or as ``.gz``.
REAL_RAW_DIR = Path(os.environ.get("MNIST_LIT_REAL_RAW", REPO_ROOT / "data" / "MNIST" / "raw"))
CONFIGS = REPO_ROOT / "configs"
COMPACT = str(CONFIGS / "compact.yaml")
QUIET = ["--trainer.enable_progress_bar", "false"]
#: A validation split of its own (a quarter of the training digits), as calibration and the OOD score require.
HELD_OUT = ["--data.val_split", "random", "--data.val_fraction", "0.25"]


def exit_code(args: list[str]) -> int:
    """The exit code of ``python -m mnist_lit ARGS``, run in-process, for a run that ends with one."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def runs(name: str) -> list[Path]:
    """The run folders ``lightning_logs/<name>/version_N`` in the current folder, oldest first."""
    return sorted(Path("lightning_logs", name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` learnable 28x28 uint8 images: each class is a fixed random blob pattern plus noise; labels cycle 0-9."""
    templates = np.random.default_rng(1234).random((10, 28, 28)) > 0.8
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = templates[labels] * rng.integers(150, 256, (n, 28, 28)) + rng.integers(0, 60, (n, 28, 28))
    return np.clip(images, 0, 255).astype(np.uint8), labels


@dataclass
class TinyMNIST:
    """A data_dir holding tiny MNIST files, and the specs that accept exactly them."""

    data_dir: Path
    raw_dir: Path
    specs: tuple[IdxFileSpec, ...]
    contents: dict[str, bytes]
    n_train: int
    n_test: int


def make_tiny_mnist(root: Path, n_train: int = 200, n_test: int = 50, gzipped: bool = False) -> TinyMNIST:
    """Write tiny IDX files in torchvision's layout under ``root`` and return their specs."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_digits(n_train, seed=0)
    test_x, test_y = synthetic_digits(n_test, seed=1)
    contents = {
        "train-images-idx3-ubyte": encode_idx(train_x, "images"),
        "train-labels-idx1-ubyte": encode_idx(train_y, "labels"),
        "t10k-images-idx3-ubyte": encode_idx(test_x, "images"),
        "t10k-labels-idx1-ubyte": encode_idx(test_y, "labels"),
    }
    specs = tuple(
        IdxFileSpec(
            name, "images" if "images" in name else "labels", n_train if name.startswith("train") else n_test,
            hashlib.sha256(data).hexdigest(),
        )
        for name, data in contents.items()
    )  # fmt: skip
    for name, data in contents.items():
        if gzipped:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return TinyMNIST(root, raw, specs, contents, n_train, n_test)


def real_mnist_gz(dest: Path) -> Path | None:
    """The four real MNIST files as ``.gz`` in ``dest`` (copied, or compressed from plain IDX files), or None when
    :data:`REAL_RAW_DIR` lacks any of them."""
    sources = []
    for spec in idx.MNIST_FILES:
        gz, plain = REAL_RAW_DIR / f"{spec.filename}.gz", REAL_RAW_DIR / spec.filename
        if not (gz.is_file() or plain.is_file()):
            return None
        sources.append((spec.filename, gz if gz.is_file() else plain))
    dest.mkdir(parents=True, exist_ok=True)
    for name, source in sources:
        data = source.read_bytes()
        (dest / f"{name}.gz").write_bytes(data if source.suffix == ".gz" else gzip.compress(data, compresslevel=1))
    return dest


class StopAt(Callback):
    """Stop this process the way a user or a scheduler would: ``signal`` sent to itself at the start of training
    epoch ``epoch`` (after the previous epoch's checkpoints were written), or after ``batch`` batches of it."""

    def __init__(self, epoch: int, signal: str = "SIGKILL", batch: int = 0) -> None:
        self.epoch, self.signal, self.batch = epoch, signal, batch

    def _maybe_stop(self, trainer: pl.Trainer, batches_done: int) -> None:
        if trainer.current_epoch == self.epoch and batches_done == self.batch:
            os.kill(os.getpid(), getattr(signal, self.signal))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_stop(trainer, 0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        self._maybe_stop(trainer, args[-1] + 1)  # the batch index is the last argument


def tiny_specs(data_dir: str | Path) -> tuple[IdxFileSpec, ...]:
    """The specs that accept exactly the tiny files :func:`make_tiny_mnist` wrote under ``data_dir`` (for a child
    process, which does not see the ``tiny_mnist`` fixture's patch)."""
    raw = Path(data_dir) / "MNIST" / "raw"
    specs = []
    for spec in idx.MNIST_FILES:
        data = (raw / spec.filename).read_bytes()
        count = int.from_bytes(data[4:8], "big")
        specs.append(IdxFileSpec(spec.filename, spec.kind, count, hashlib.sha256(data).hexdigest()))
    return tuple(specs)


def error_message(err: str) -> str:
    """The message a refused command printed, from the line that starts with ``error: `` to the end of ``err``: the
    run's own log lines, if any, come before it. Fails the test where no line starts so."""
    lines = err.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert starts, f"no line starts with 'error: ' in:\n{err}"
    return "".join(lines[starts[0] :])


def refused(args: list[str], capsys: pytest.CaptureFixture, output: Path) -> str:
    """Run ``python -m mnist_lit ARGS``: it must exit with 1 and one message, and leave nothing at ``output``, nor a
    temporary file beside it. Returns the message."""
    assert exit_code(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = error_message(err)
    assert not output.exists()
    if output.parent.is_dir():
        assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]
    return message


def tiny_compact_checkpoint(root: Path) -> Path:
    """A CompactCNN checkpoint (``last.ckpt``) from one epoch on tiny MNIST made under ``root``, for module fixtures."""
    tiny = make_tiny_mnist(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(idx, "MNIST_FILES", tiny.specs)
        patch.chdir(root)
        quiet = ["--trainer.enable_progress_bar", "false", "--test_after_fit", "false"]
        main(["fit", "--config", str(CONFIGS / "compact.yaml"), "--trainer.max_epochs", "1", *quiet])
    return root / "lightning_logs/compact/version_0/checkpoints/last.ckpt"


def quick_trainer(max_epochs: int, **options: Any) -> pl.Trainer:
    """A trainer for a short fit inside a test: no logger, checkpoint, progress bar, model summary or validation loop,
    unless ``options`` say otherwise."""
    settings: dict[str, Any] = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    return pl.Trainer(max_epochs=max_epochs, **{**settings, **options})


@dataclass(frozen=True)
class CalibratedRun:
    """A calibrated fit on tiny MNIST: the folder it ran in, its run folder, its data and the specs accepting them."""

    root: Path
    run: Path
    data: Path
    specs: tuple[IdxFileSpec, ...]

    @property
    def checkpoint(self) -> Path:
        """The checkpoint ``--calibrate true`` wrote: the best weights with the temperature (and the OOD score)."""
        return self.run / "checkpoints" / "calibrated.ckpt"


def calibrated_tiny_run(root: Path, *options: str) -> CalibratedRun:
    """A compact network fitted under ``root`` for 4 epochs on tiny MNIST (400 training digits) with a held-out
    validation split and ``--calibrate true``, plus ``options``: for module fixtures."""
    tiny = make_tiny_mnist(root / "data", n_train=400)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(idx, "MNIST_FILES", tiny.specs)
        patch.chdir(root)
        main(["fit", "--config", COMPACT, "--trainer.max_epochs", "4", "--model.init_args.lr", "0.003", *QUIET,
              *HELD_OUT, "--calibrate", "true", *options, "--data.data_dir", str(root / "data")])  # fmt: skip
        run = runs("compact")[-1].resolve()
    return CalibratedRun(root, run, root / "data", tiny.specs)


def predicted_rows(ckpt: Path, images: np.ndarray, inputs: Path, figure: bool = False) -> list[dict[str, str]]:
    """Save ``images`` (N x 28 x 28 uint8) to ``inputs`` (``.npy``), ``predict`` them with ``ckpt`` as they are (no
    inversion), and return the rows of the run's ``predictions.csv``."""
    np.save(inputs, images)
    main(["predict", "--config", COMPACT, "--ckpt_path", str(ckpt), "--data.predict_path", str(inputs),
          "--data.predict_invert", "never", *QUIET, "--predict_figure", str(figure).lower()])  # fmt: skip
    with (runs("compact")[-1] / "predictions.csv").open(newline="") as table:
        return list(csv.DictReader(table))


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    """A picture's bytes in ``fmt``."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    out = io.BytesIO()
    picture.save(out, format=fmt, **options)
    return out.getvalue()


def png_pixels(data_url: str) -> np.ndarray:
    """The pixels of a ``data:image/png;base64,...`` URL."""
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :]))))


def post_png(client: Any, image: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """``image`` sent as a PNG to the ``/api/predict`` of ``client`` (a FastAPI TestClient): the JSON answer, and the
    28 x 28 pixels the server says it classified."""
    response = client.post("/api/predict", content=encode(image), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer, png_pixels(answer["image"])
