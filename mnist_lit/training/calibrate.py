"""Temperature scaling (Guo et al., 2017) and the "not sure" threshold, fitted on the validation split after training.

One scalar T divides the logits; it is the T that minimises the validation negative log-likelihood, found by L-BFGS
on log T (so T stays positive). Dividing every logit of an input by the same positive number keeps their order, so
no prediction changes. The threshold is then chosen on the same validation images, with T applied (see
:func:`~mnist_lit.reporting.calibration.unsure_threshold`). Both go into the network's buffers, hence into any
checkpoint saved from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.errors import UserError
from mnist_lit.models.base import MNISTClassifier
from mnist_lit.reporting.calibration import DEFAULT_KEEP, reliability_bins, top_label, unsure_threshold
from mnist_lit.reporting.ood import DEFAULT_OOD_KEEP
from mnist_lit.training.ood import fit_ood
from mnist_lit.utils.io import free_name


class CalibrationError(UserError):
    """A temperature that must not, or cannot, be fitted as asked."""


def check_calibratable(val_split: str, option: str = "--calibrate") -> None:
    """Refuse to fit on the test set: the test numbers would then no longer be of unseen data."""
    if val_split == "test":
        raise CalibrationError(
            f"{option}: this run validates on the test set (data.val_split: test), and a temperature and a 'not sure' "
            "threshold fitted there would make every test number after it (ECE, NLL, the unsure fraction) a number "
            "about data the fit has seen. Train with a held-out validation split instead, for example "
            "--data.val_split random --data.val_fraction 0.1 (or keras)."
        )


#: The range T is kept in. Where validation has no errors, the NLL falls all the way as T goes to 0, so the
#: minimum is on the bound (and the network is then as sure as the validation split allows).
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 100) -> float:
    """The temperature T minimising ``cross_entropy(logits / T, labels)``, by L-BFGS on log T, in float64, within
    :data:`TEMPERATURE_RANGE`."""
    logits, labels = logits.detach().double().cpu(), labels.detach().long().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        raise CalibrationError(f"temperature scaling did not converge (T = {temperature})")
    return min(max(temperature, TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1])


@torch.no_grad()
def split_logits(model: MNISTClassifier, datamodule: MNISTDataModule, split: str) -> tuple[Tensor, Tensor]:
    """The raw logits (T not applied) and labels of a split (``val`` or ``test``), normalized as in training."""
    dataset = datamodule.data_val if split == "val" else datamodule.data_test
    if dataset is None:
        raise RuntimeError("the data module has not been set up")
    was_training = model.training
    model.eval()
    device = model.device
    chunks = []
    for start in range(0, len(dataset), 1024):
        images = dataset.images[start : start + 1024].to(device)
        chunks.append(model(datamodule.normalize(images.unsqueeze(1))).float().cpu())
    model.train(was_training)
    return torch.cat(chunks), dataset.labels.cpu().long()


def nll_and_calibration(logits: Tensor, labels: Tensor, temperature: float) -> dict[str, float]:
    """NLL, ECE, MCE and accuracy of ``softmax(logits / temperature)``."""
    scaled = logits.double() / temperature
    conf, correct = top_label(scaled.softmax(dim=1).numpy(), labels.numpy())
    bins = reliability_bins(conf, correct)
    return {
        "nll": float(F.cross_entropy(scaled, labels)),
        "ece": bins["ece"],
        "mce": bins["mce"],
        "accuracy": float(correct.mean()),
    }


@dataclass
class CalibrationResult:
    """What :func:`calibrate` fitted, and the validation split's numbers before and after."""

    temperature: float
    unsure_threshold: float
    keep: float
    val_images: int
    val_before: dict[str, float]
    val_after: dict[str, float]
    val_unsure_fraction: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        b, a = self.val_before, self.val_after
        return (
            f"Temperature T = {self.temperature:.4f} (fitted on {self.val_images} validation images): validation NLL "
            f"{b['nll']:.4f} -> {a['nll']:.4f}, ECE {b['ece']:.4f} -> {a['ece']:.4f}; accuracy {a['accuracy']:.4%} "
            f"(unchanged). Not sure below p = {self.unsure_threshold:.4f} (keeps {self.keep:.1%} of validation images "
            f"answered; marks {self.val_unsure_fraction:.2%})."
        )


def calibrate(model: MNISTClassifier, datamodule: MNISTDataModule, keep: float = DEFAULT_KEEP) -> CalibrationResult:
    """Fit T and the unsure threshold on the validation split and store both in ``model``'s buffers."""
    check_calibratable(datamodule.hparams.val_split)
    logits, labels = split_logits(model, datamodule, "val")
    before = nll_and_calibration(logits, labels, 1.0)
    temperature = fit_temperature(logits, labels)
    after = nll_and_calibration(logits, labels, temperature)
    conf, _ = top_label((logits.double() / temperature).softmax(dim=1).numpy(), labels.numpy())
    threshold = unsure_threshold(conf, keep)
    model.temperature.fill_(temperature)
    model.unsure_threshold.fill_(threshold)
    return CalibrationResult(
        temperature=temperature,
        unsure_threshold=threshold,
        keep=keep,
        val_images=len(labels),
        val_before=before,
        val_after=after,
        val_unsure_fraction=float((conf < threshold).mean()),
    )


def save_calibrated(
    trainer: Trainer,
    model: MNISTClassifier,
    datamodule: MNISTDataModule,
    temperature: bool = True,
    ood_method: str | None = None,
    ood_keep: float = DEFAULT_OOD_KEEP,
    ood_keep_transformed: bool = False,
) -> Path | None:
    """``fit --calibrate`` and ``fit --ood.method``: temperature scaling on the validation split, then the OOD score
    (its statistics and threshold, which read the temperature), kept in ``model`` (for the test that follows) and
    saved as ``checkpoints/calibrated.ckpt`` (a free name) beside the run's other checkpoints, if it has any."""
    if temperature:
        result = calibrate(model, datamodule)
        model.calibration_fit = result.as_dict()
        rank_zero_info(result.summary())
    if ood_method:
        ood = fit_ood(model, datamodule, ood_method, ood_keep, transformed=ood_keep_transformed)
        model.ood_fit = ood.as_dict()
        rank_zero_info(ood.summary())
    checkpoint = trainer.checkpoint_callback
    dirpath = checkpoint.dirpath if isinstance(checkpoint, ModelCheckpoint) else None
    if not dirpath:
        rank_zero_info("No checkpoint folder: the calibration is used by this run's test only.")
        return None
    path = Path(dirpath) / "calibrated.ckpt"
    path = trainer.strategy.broadcast(free_name(path, keep_suffix=True) if trainer.is_global_zero else path)
    trainer.save_checkpoint(path)
    rank_zero_info(f"Wrote {path}")
    return path
