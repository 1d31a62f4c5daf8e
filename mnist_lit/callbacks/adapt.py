"""Label-free test-time adaptation: BatchNorm's statistics re-estimated on the images about to be predicted.

A network trained on MNIST normalizes each layer with the means and variances of MNIST's digits; other people's
digits (thicker pens, 8 x 8 scans, phone photos) have others. SHOT (Liang et al., ICML 2020) and TENT (Wang et al.,
ICLR 2021) both start by replacing them with the target images' own: one pass over those images with the BatchNorm
layers in training mode and a cumulative average (``momentum=None``). No weight changes, no label is read. It adapts
on the very images it is then judged on, so its numbers are reported apart from the network's own.

Hand-written, a few lines: PyTorch's ``torch.optim.swa_utils.update_bn`` (made for weight averaging) does the same
pass but puts the whole model in training mode, so dropout would drop features while the statistics are measured.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mnist_lit.callbacks.run_folder import require_classifier, require_datamodule
from mnist_lit.errors import UserError

log = logging.getLogger(__name__)


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that track running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Replace the running statistics of every BatchNorm layer of ``model`` by the average over ``batches`` (model
    inputs, normalized as in training) of their batch statistics, in place; every other layer stays in eval mode
    (no dropout). Returns the number of images read; ``model`` is left in eval mode.

    Raises ``ValueError`` when ``model`` has no BatchNorm layer (nothing to adapt) or ``batches`` is empty.
    """
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer: there are no statistics to adapt")
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average of the batches' statistics
        m.train()
    count = 0
    try:
        for x in batches:
            model(x)
            count += len(x)
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    if not count:
        raise ValueError("no images to adapt the BatchNorm statistics on")
    return count


class AdaptBatchNorm(Callback):
    """Before ``predict``, re-estimate the network's BatchNorm statistics on the images to predict (one pass, no
    label, no weight changed); the checkpoint on disk is untouched. For a folder of your own digits, which are not
    MNIST's: ``python -m mnist_lit predict ... --trainer.callbacks+=mnist_lit.callbacks.AdaptBatchNorm``.

    The answers then depend on the whole folder, not on each image alone, and a folder of a few images gives noisy
    statistics, so fewer than ``min_images`` are refused.

    Args:
        min_images: the fewest images to adapt on.
        batch_size: images per pass of the network (each batch's statistics count equally).
    """

    def __init__(self, min_images: int = 32, batch_size: int = 256) -> None:
        if min_images < 2 or batch_size < 2:
            raise ValueError("AdaptBatchNorm: min_images and batch_size must be at least 2 (a batch's variance)")
        self.min_images = min_images
        self.batch_size = batch_size

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = require_classifier(self, pl_module)
        datamodule = require_datamodule(self, trainer)
        if not batchnorm_layers(model.net):
            raise UserError(
                f"AdaptBatchNorm: {type(model).__name__} has no BatchNorm layer, so there are no statistics to adapt; "
                "predict without the callback (configs/accurate.yaml and robust.yaml train networks that have them)."
            )
        assert datamodule.data_predict is not None, "Lightning sets the data module up before predict starts"
        count = len(datamodule.data_predict)
        if count < self.min_images:
            raise UserError(
                f"AdaptBatchNorm: {count} image{'' if count == 1 else 's'} to predict, fewer than min_images "
                f"({self.min_images}): statistics of so few would be noise. Predict a larger folder, or without the "
                "callback."
            )
        pixels = datamodule.predict_pixels(torch.arange(count))
        # Equal batches: the cumulative average weighs each batch alike, so the last, smaller one joins the one before.
        starts = list(range(0, max(count - self.batch_size, 0) + 1, self.batch_size))
        ends = [*starts[1:], count]
        batches = (datamodule.normalize(pixels[a:b].to(model.device)) for a, b in zip(starts, ends, strict=True))
        adapt_batchnorm(model.net, batches)
        if trainer.is_global_zero:
            log.info(
                "AdaptBatchNorm: the statistics of %d BatchNorm layers re-estimated on the %d images to predict "
                "(label-free test-time adaptation: the answers adapt to this folder).",
                len(batchnorm_layers(model.net)), count,
            )  # fmt: skip
