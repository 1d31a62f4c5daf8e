"""The data module: splits, determinism, normalization, batching, exact evaluation coverage."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import pytest
import torch

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.normalization import MNIST_MEAN, MNIST_STD
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


def test_training_batches_reshuffle_each_epoch_from_the_seed_and_epoch_alone(tiny_mnist: TinyMNIST) -> None:
    def epochs(dm: MNISTDataModule, numbers: list[int]) -> list[torch.Tensor]:
        loader = dm.train_dataloader()
        orders = []
        for epoch in numbers:
            loader.sampler.set_epoch(epoch)  # as Lightning does before each training epoch
            orders.append(torch.cat([y for _, y in loader]))
        return orders

    first, second = epochs(_dm(tiny_mnist, batch_size=32), [0, 1, 2]), epochs(_dm(tiny_mnist, batch_size=32), [0, 1, 2])
    assert not torch.equal(first[0], first[1])  # a new order each epoch
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # the same orders for the same seed
    (resumed,) = epochs(_dm(tiny_mnist, batch_size=32), [2])  # a fresh loader, as after a restart, at epoch 2
    assert torch.equal(resumed, first[2])
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
    with pytest.raises(FileNotFoundError, match=r"MNIST files missing from .*Run prepare_data"):
        MNISTDataModule(data_dir=tmp_path).setup()


def test_keep_on_device_serves_batches_from_the_training_device(tiny_mnist: TinyMNIST) -> None:
    dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, download=False, keep_on_device=True, batch_size=32)
    trainer = pl.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(CompactCNN(), datamodule=dm)
    device = trainer.strategy.root_device
    assert dm.data_train.images.device == device and dm.data_test.labels.device == device
    images, labels = next(iter(dm.train_dataloader()))
    assert images.device == device and images.dtype == torch.uint8 and len(labels) == 32


@pytest.mark.parametrize(
    ("val_split", "counts", "how"),
    [
        ("keras", "160 train / 40 validation", "the last 20% of the training set, as Keras' validation_split"),
        ("random", "160 train / 40 validation", "a random 20% of the training set, seed 0"),
        ("test", "200 train / 50 validation", "the test set, as notebook B's validation_data"),
    ],
)
def test_the_data_summary_says_what_each_split_holds(tiny_mnist: TinyMNIST, val_split, counts, how, caplog) -> None:
    dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, download=False, val_split=val_split)
    with caplog.at_level("INFO", logger="mnist_lit"):
        dm.setup()
    summary = caplog.text
    assert f"Data: {counts} ({how}) / 50 test; 28x28, pixels / 255." in summary
    train_labels = dm.data_train.labels
    balance = ", ".join(f"{d}: {int((train_labels == d).sum())}" for d in range(10))
    assert f"Training split per digit: {balance} (from " in summary
