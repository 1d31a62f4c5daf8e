"""On the real MNIST files (``$MNIST_LIT_REAL_RAW`` or ``data/MNIST/raw``, when present): counts, checksums, split,
learning."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.idx import MNIST_FILES
from mnist_lit.models import CompactCNN

pytestmark = pytest.mark.real_data

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def real_mnist(real_raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> MNISTDataModule:
    root = tmp_path_factory.mktemp("real")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for spec in MNIST_FILES:
        shutil.copy(real_raw_dir / f"{spec.filename}.gz", raw)
    dm = MNISTDataModule(data_dir=root, download=False, val_split="keras", batch_size=128)
    dm.prepare_data()  # verifies each file against the published size and SHA-256, then decompresses it
    dm.setup()
    return dm


def test_files_verify_and_counts_match_the_release(real_mnist: MNISTDataModule) -> None:
    for spec in MNIST_FILES:
        assert (Path(real_mnist.raw_dir) / spec.filename).stat().st_size == spec.nbytes
    train_labels = torch.cat([real_mnist.data_train.labels, real_mnist.data_val.labels])
    assert torch.bincount(train_labels).tolist() == TRAIN_COUNTS
    assert torch.bincount(real_mnist.data_test.labels).tolist() == TEST_COUNTS
    assert real_mnist.data_train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert real_mnist.data_test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert real_mnist.data_train.images.dtype == torch.uint8


def test_the_split_is_48000_12000_and_the_test_set_10000(real_mnist: MNISTDataModule) -> None:
    assert (len(real_mnist.data_train), len(real_mnist.data_val), len(real_mnist.data_test)) == (48000, 12000, 10000)
    pixels = real_mnist.data_train.images.float() / 255
    train_and_val = torch.cat([pixels, real_mnist.data_val.images.float() / 255])
    assert train_and_val.mean().item() == pytest.approx(0.130660, abs=1e-5)
    assert train_and_val.std().item() == pytest.approx(0.308108, abs=1e-4)


@pytest.mark.slow
def test_a_short_real_run_gets_past_90_percent(real_mnist: MNISTDataModule) -> None:
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        max_steps=300, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    model = CompactCNN()
    trainer.fit(model, datamodule=real_mnist)
    (result,) = trainer.test(model, datamodule=real_mnist, verbose=False)
    assert result["test/acc"] > 0.90
