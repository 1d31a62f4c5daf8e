"""The data module: splits, determinism, normalization, batching, exact evaluation coverage."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import pytest
import torch

from mnist_lit.data.datamodule import MNIST_MEAN, MNIST_STD, MNISTDataModule
from mnist_lit.models import CompactCNN
from tests.helpers import TinyMNIST


def _dm(tiny: TinyMNIST, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=tiny.data_dir, download=False, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def _rows(dataset) -> set[bytes]:
    return {img.numpy().tobytes() for img in dataset.images}


def test_keras_split_holds_out_the_last_20_percent_unshuffled(tiny_mnist: TinyMNIST) -> None:
    dm = _dm(tiny_mnist, val_split="keras")
    n_val = tiny_mnist.n_train // 5
    assert (len(dm.data_train), len(dm.data_val)) == (tiny_mnist.n_train - n_val, n_val)
    all_images = torch.cat([dm.data_train.images, dm.data_val.images])
    raw = torch.frombuffer(bytearray(tiny_mnist.contents["train-images-idx3-ubyte"][16:]), dtype=torch.uint8)
    assert torch.equal(all_images.flatten(), raw)  # train first, validation = the tail, order kept
    assert len(dm.data_test) == tiny_mnist.n_test


def test_random_split_is_seeded_disjoint_and_complete(tiny_mnist: TinyMNIST) -> None:
    a, b = _dm(tiny_mnist, val_split="random", seed=1), _dm(tiny_mnist, val_split="random", seed=1)
    c = _dm(tiny_mnist, val_split="random", seed=2)
    assert torch.equal(a.data_val.images, b.data_val.images)
    assert not torch.equal(a.data_val.images, c.data_val.images)
    train_idx, val_idx = a.split_indices(tiny_mnist.n_train)
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(tiny_mnist.n_train))
    assert len(val_idx) == tiny_mnist.n_train // 5


def test_real_mnist_split_sizes() -> None:
    dm = MNISTDataModule(val_split="random")
    train_idx, val_idx = dm.split_indices(60000)
    assert (len(train_idx), len(val_idx)) == (48000, 12000)
    train_idx, val_idx = MNISTDataModule(val_split="keras").split_indices(60000)
    assert train_idx[-1] == 47999 and val_idx[0] == 48000 and len(val_idx) == 12000


def test_val_split_test_validates_on_the_test_set(tiny_mnist: TinyMNIST) -> None:
    dm = _dm(tiny_mnist, val_split="test")
    assert dm.data_val is dm.data_test
    assert len(dm.data_train) == tiny_mnist.n_train


@pytest.mark.parametrize("normalization", ["unit", "standardize"])
def test_normalization_on_transfer(tiny_mnist: TinyMNIST, normalization: str) -> None:
    dm = _dm(tiny_mnist, normalization=normalization, batch_size=16)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (16, 1, 28, 28) and labels.dtype == torch.int64
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    expected = images.float() / 255
    if normalization == "standardize":
        expected = (expected - MNIST_MEAN) / MNIST_STD
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, labels)


def test_training_batches_reshuffle_each_epoch_and_repeat_with_the_seed(tiny_mnist: TinyMNIST) -> None:
    def epochs(dm: MNISTDataModule) -> list[torch.Tensor]:
        loader = dm.train_dataloader()
        return [torch.cat([y for _, y in loader]) for _ in range(2)]

    first, second = epochs(_dm(tiny_mnist, batch_size=32)), epochs(_dm(tiny_mnist, batch_size=32))
    assert not torch.equal(first[0], first[1])  # a new order each epoch
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # the same orders for the same seed
    assert sorted(first[0].tolist()) == sorted(_dm(tiny_mnist).data_train.labels.tolist())  # every image once


def test_eval_loaders_cover_each_image_once_in_order_with_a_partial_last_batch(tiny_mnist: TinyMNIST) -> None:
    dm = _dm(tiny_mnist, eval_batch_size=16)
    batches = list(dm.test_dataloader())
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    assert torch.equal(torch.cat([x for x, _ in batches])[:, 0], dm.data_test.images)


def test_normalization_travels_with_the_checkpoint(tiny_mnist: TinyMNIST, caplog) -> None:
    trained = MNISTDataModule(normalization="standardize")
    later = MNISTDataModule(normalization="unit")
    with caplog.at_level(logging.WARNING):
        later.load_state_dict(trained.state_dict())
    assert later.normalization == "standardize"
    assert "trained with data.normalization=standardize" in caplog.text


def test_setup_without_the_files_says_what_to_do(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="MNIST files missing from .*Run prepare_data"):
        MNISTDataModule(data_dir=tmp_path).setup()


def test_keep_on_device_serves_batches_from_the_training_device(tiny_mnist: TinyMNIST) -> None:
    dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, download=False, keep_on_device=True, batch_size=32)
    trainer = pl.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(CompactCNN(), datamodule=dm)
    device = trainer.strategy.root_device
    assert dm.data_train.images.device == device and dm.data_test.labels.device == device
    images, labels = next(iter(dm.train_dataloader()))
    assert images.device == device and images.dtype == torch.uint8 and len(labels) == 32
