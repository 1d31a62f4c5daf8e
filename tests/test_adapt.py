"""Label-free test-time adaptation: BatchNorm's statistics re-estimated on the images predicted."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from mnist_lit.callbacks import AdaptBatchNorm
from mnist_lit.callbacks.adapt import adapt_batchnorm
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.errors import UserError
from mnist_lit.models import AccurateCNN, CompactCNN
from tests.helpers import TinyMNIST


def test_the_statistics_become_those_of_the_batches_and_nothing_else_changes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, momentum=0.01), nn.Dropout(0.5), nn.Flatten())
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(8, 1, 6, 6) * 3 + 2 for _ in range(2)]
    assert adapt_batchnorm(model, batches) == 16
    outputs = [model[0](x) for x in batches]
    expected_mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).mean(dim=0)
    expected_var = torch.stack([o.var(dim=(0, 2, 3)) for o in outputs]).mean(dim=0)
    torch.testing.assert_close(model[1].running_mean, expected_mean)
    torch.testing.assert_close(model[1].running_var, expected_var)
    assert model[1].momentum == 0.01 and not model.training  # restored, and in eval mode: dropout off
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        adapt_batchnorm(nn.Sequential(nn.Linear(2, 2)), [torch.ones(2, 2)])


def predict_with(model: pl.LightningModule, tiny: TinyMNIST, *callbacks: pl.Callback) -> torch.Tensor:
    dm = MNISTDataModule(data_dir=tiny.data_dir, download=False, val_split="test")
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    return torch.cat([batch["probabilities"] for batch in trainer.predict(model, datamodule=dm)])


def test_predict_adapts_to_the_images_it_predicts(tiny_mnist: TinyMNIST) -> None:
    torch.manual_seed(0)
    model = AccurateCNN(filters=(8, 16, 32))
    first = next(m for m in model.net if isinstance(m, nn.BatchNorm2d))
    plain = predict_with(model, tiny_mnist)
    assert torch.equal(first.running_mean, torch.zeros_like(first.running_mean))  # predict alone changes nothing
    adapted = predict_with(model, tiny_mnist, AdaptBatchNorm(min_images=8))
    assert float(first.running_mean.abs().max()) > 0 and not torch.allclose(plain, adapted)
    assert torch.allclose(adapted.sum(dim=1), torch.ones(len(adapted)))


def test_adaptation_is_refused_without_batchnorm_or_with_too_few_images(tiny_mnist: TinyMNIST) -> None:
    with pytest.raises(UserError, match="CompactCNN has no BatchNorm layer"):
        predict_with(CompactCNN(), tiny_mnist, AdaptBatchNorm())
    with pytest.raises(UserError, match=f"{tiny_mnist.n_test} images to predict, fewer than min_images"):
        predict_with(AccurateCNN(filters=(8, 16, 32)), tiny_mnist, AdaptBatchNorm(min_images=tiny_mnist.n_test + 1))
