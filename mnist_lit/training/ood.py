"""Fitting the out-of-distribution score after training: its statistics on the training images, its "not a digit"
threshold on the validation digits.

The Mahalanobis scores' class means and shared covariance come from the penultimate features of the training
images (not augmented, in eval mode: as the network sees inputs after training); the threshold, for every method, is
the score that keeps ``keep`` (99% by default) of the validation digits as digits. Refused where the validation split
is the test set: a threshold chosen there makes the test's "not a digit" rate a number about data the fit has seen.
The scores read the network's temperature, so fit after temperature scaling (``calibrate`` does both, in that order).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.errors import UserError
from mnist_lit.models.base import MNISTClassifier
from mnist_lit.models.ood import OOD_METHODS, mahalanobis_statistics, unit_length, uses_features
from mnist_lit.reporting.ood import DEFAULT_OOD_KEEP, keep_threshold

#: The seeds of the transforms ``fit_ood(..., transformed=True)`` draws for the validation digits: four draws of
#: each, so that the tail the threshold sits in (1% by default) holds four times as many images.
TRANSFORM_SEEDS = (2027, 2028, 2029, 2030)

#: A threshold on transformed validation digits asked of a run that transforms no image.
NOTHING_TRANSFORMED = (
    "{option}: this run neither augments nor distorts its training images (data.augment, data.distort), so there "
    "are no transformed validation digits to fit the 'not a digit' threshold on; drop the option, or give "
    "data.augment or data.distort."
)


class OODFitError(UserError):
    """An OOD score that must not, or cannot, be fitted as asked."""


def check_ood_fittable(
    val_split: str, method: str, option: str = "--ood.method", keep: float = DEFAULT_OOD_KEEP, keep_option: str = "keep"
) -> None:
    """Refuse an unknown method, a share to keep outside (0, 1], and a threshold fitted on the test set."""
    if method not in OOD_METHODS:
        raise OODFitError(f"{option} {method}: unknown score; choose one of {', '.join(OOD_METHODS)}.")
    if not 0.0 < keep <= 1.0:
        raise OODFitError(f"{keep_option} {keep}: a share of the validation digits, in (0, 1].")
    if val_split == "test":
        raise OODFitError(
            f"{option}: this run validates on the test set (data.val_split: test), and a 'not a digit' threshold "
            "chosen there would make the test's share of digits called 'not a digit' a number about data the fit has "
            "seen. Train with a held-out validation split instead, for example --data.val_split random "
            "--data.val_fraction 0.1 (or keras)."
        )


@torch.no_grad()
def split_outputs(
    model: MNISTClassifier,
    datamodule: MNISTDataModule,
    split: str,
    batch_size: int = 1024,
    transform_seed: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The raw logits (N x 10), penultimate features (N x D) and labels of a split (``train``, ``val`` or ``test``),
    normalized as in training, in eval mode; on the CPU, float32. Never augmented, unless ``transform_seed`` is
    given: then each image is moved and distorted as training's are (:meth:`MNISTDataModule.transform`), once, by
    draws from that seed alone."""
    dataset = {"train": datamodule.data_train, "val": datamodule.data_val, "test": datamodule.data_test}[split]
    if dataset is None:
        raise RuntimeError("the data module has not been set up")
    generator = None if transform_seed is None else torch.Generator().manual_seed(transform_seed)
    was_training = model.training
    model.eval()
    logits, features = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            images = dataset.images[start : start + batch_size].to(model.device).unsqueeze(1)
            x = datamodule.normalize(images) if generator is None else datamodule.transform(images, generator)
            f = model.features(x)
            logits.append(model.net[-1](f).float().cpu())  # type: ignore[index]  # features() checked the net
            features.append(f.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(features), dataset.labels.cpu().long()


def validation_outputs(
    model: MNISTClassifier, datamodule: MNISTDataModule, transformed: bool = False
) -> tuple[Tensor, Tensor]:
    """The raw logits and penultimate features the threshold is fitted on: of the validation digits, or, when
    ``transformed``, of each of them under the training transforms of every seed of :data:`TRANSFORM_SEEDS`."""
    if not transformed:
        return split_outputs(model, datamodule, "val")[:2]
    draws = [split_outputs(model, datamodule, "val", transform_seed=seed) for seed in TRANSFORM_SEEDS]
    return torch.cat([logits for logits, _, _ in draws]), torch.cat([features for _, features, _ in draws])


@dataclass
class OODFitResult:
    """What :func:`fit_ood` fitted, and how the validation digits score."""

    method: str
    threshold: float
    keep: float
    transformed: bool
    temperature: float
    train_images: int
    val_images: int
    val_not_digit_fraction: float
    val_score_quantiles: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        fitted = f" (statistics from {self.train_images} training images)" if self.train_images else ""
        return (
            f"OOD score {self.method}{fitted}: 'not a digit' above {self.threshold:.4f}, which keeps "
            f"{self.keep:.1%} of the {self.val_images} {'transformed ' if self.transformed else ''}validation digits "
            f"(calls {self.val_not_digit_fraction:.2%} "
            "of them 'not a digit')."
        )


def fit_ood(
    model: MNISTClassifier,
    datamodule: MNISTDataModule,
    method: str = "mahalanobis",
    keep: float = DEFAULT_OOD_KEEP,
    transformed: bool = False,
) -> OODFitResult:
    """Fit ``method``'s statistics on the training images and its threshold on the validation split, into
    ``model.ood``'s buffers (hence into any checkpoint saved after).

    With ``transformed``, the threshold keeps ``keep`` of the validation digits as training transforms them
    (``data.augment``, ``data.distort``: other pens, blur, low resolution, slant; four draws of each, from
    :data:`TRANSFORM_SEEDS`): the digits a recipe for other people's digits models, rather than MNIST's own (the
    statistics stay those of the clean training images)."""
    check_ood_fittable(datamodule.hparams.val_split, method, keep=keep)
    if transformed and not datamodule.transforms_images:
        raise OODFitError(NOTHING_TRANSFORMED.format(option="--ood.keep_transformed"))
    scorer = model.ood
    train_images = 0
    if uses_features(method):
        _, train_features, train_labels = split_outputs(model, datamodule, "train")
        digits = (train_labels >= 0) & (train_labels < 10)
        if method == "mahalanobis_normalized":
            train_features = unit_length(train_features)
        means, whitening = mahalanobis_statistics(train_features[digits], train_labels[digits])
        scorer.set(method, float("inf"), means.to(scorer.class_means), whitening.to(scorer.whitening))
        train_images = int(digits.sum())
    else:
        scorer.set(method, float("inf"))
    logits, features = validation_outputs(model, datamodule, transformed)
    device = model.device
    with torch.no_grad():
        scores = scorer(logits.to(device), features.to(device), model.temperature).cpu().numpy()
    threshold = keep_threshold(scores, keep)
    scorer.threshold.fill_(threshold)
    quantiles = {f"q{int(q * 100)}": float(np.quantile(scores, q)) for q in (0.5, 0.9, 0.99)}
    return OODFitResult(
        method=method,
        threshold=threshold,
        keep=keep,
        transformed=transformed,
        temperature=float(model.temperature),
        train_images=train_images,
        val_images=len(scores),
        val_not_digit_fraction=float((scores > threshold).mean()),
        val_score_quantiles=quantiles,
    )
