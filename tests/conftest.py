"""Shared fixtures: tiny, learnable MNIST-shaped IDX files made on the fly, and the real files when present."""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mnist_lit.cli import main
from mnist_lit.data import files
from mnist_lit.data.files import IdxFileSpec, encode_idx

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_RAW_DIR = Path(os.environ.get("MNIST_LIT_REAL_RAW", REPO_ROOT.parent / "shared" / "data" / "MNIST" / "raw"))
CONFIGS = REPO_ROOT / "configs"


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


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TinyMNIST:
    """Tiny MNIST files in ``tmp_path/data``, accepted as *the* MNIST files for the duration of the test."""
    tiny = make_tiny_mnist(tmp_path / "data")
    monkeypatch.setattr(files, "MNIST_FILES", tiny.specs)
    return tiny


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every network source fail at once (and record what was tried), so no test touches the network."""
    from mnist_lit.data import acquire

    tried: list[str] = []

    def refuse_url(url: str, timeout: float) -> None:
        tried.append(url)
        raise acquire.urllib.error.URLError("network disabled in tests")

    def refuse_pip(requirement: str, dest: Path, timeout: float) -> Path:
        tried.append(f"pip:{requirement}")
        raise acquire.SourceError("package index disabled in tests")

    monkeypatch.setattr(acquire.urllib.request, "urlopen", refuse_url)
    monkeypatch.setattr(acquire, "pip_download", refuse_pip)
    return tried


@pytest.fixture
def real_raw_dir() -> Path:
    """The shared real MNIST files; the test is skipped where they are not."""
    if not all((REAL_RAW_DIR / f"{spec.filename}.gz").is_file() for spec in files.MNIST_FILES):
        pytest.skip(f"real MNIST files not found in {REAL_RAW_DIR}")
    return REAL_RAW_DIR


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so nothing lands in the checkout (lightning_logs/, data/)."""
    monkeypatch.chdir(tmp_path)
