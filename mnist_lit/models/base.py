"""What every network of mnist_lit shares: the loss, the metrics, the evaluation, the optimizer and the steps.

A network class only builds its layers and hands them to :class:`MNISTClassifier`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar, cast

import torch
import torch.nn.functional as F
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassConfusionMatrix
from torchmetrics.utilities import dim_zero_cat

from mnist_lit.models.ood import OODScorer
from mnist_lit.reporting.calibration import N_BINS, reliability_bins
from mnist_lit.reporting.metrics import Evaluation, evaluation_summary

STAGES = ("train", "val", "test")
#: The label of an outlier (a non-digit) in a training batch; see ``outlier_weight``.
OUTLIER = -1


def uniform_cross_entropy(logits: Tensor, outlier: Tensor) -> Tensor:
    """The cross-entropy from the softmax of ``logits`` to the uniform distribution, averaged over the rows where
    ``outlier`` is true; exactly 0 (and so no gradient) when none is, without a host synchronization to find out."""
    per_row = -F.log_softmax(logits.float(), dim=1).mean(dim=1)
    mask = outlier.to(per_row.dtype)
    return (per_row * mask).sum() / mask.sum().clamp_min(1.0)


def keras_init_(module: nn.Module) -> None:
    """Keras' default initializers: glorot-uniform kernels, zero biases (PyTorch's default is kaiming-uniform)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


M = TypeVar("M", bound=Metric)


def metric_dict(metrics: dict[str, M]) -> Mapping[str, M]:
    """``metrics`` as an ``nn.ModuleDict``, so that they move with the module, typed as the mapping of metrics it is
    (``ModuleDict`` items read as plain modules to a type checker)."""
    return cast("Mapping[str, M]", nn.ModuleDict(metrics))


class MNISTClassifier(LightningModule):
    """A 10-class image classifier trained the Keras way: logits in, cross-entropy, Adam.

    The network ends in logits, and the loss is ``cross_entropy(logits, labels)``: the same number as Keras'
    softmax followed by categorical cross-entropy on one-hot labels, computed without the softmax's round trip.
    ``predict`` returns the softmax probabilities, as Keras' ``model.predict`` does.

    Args:
        net: the layers, from image batches (N x 1 x 28 x 28) to logits (N x 10).
        lr: Adam's learning rate (Keras: 1e-3); with ``lr_schedule: onecycle``, the peak rate.
        betas: Adam's beta_1 and beta_2 (Keras: 0.9, 0.999).
        eps: Adam's epsilon (Keras: 1e-7; PyTorch's default is 1e-8).
        weight_decay: L2 penalty added by Adam (Keras: none).
        init: ``keras`` for glorot-uniform kernels and zero biases, ``torch`` for PyTorch's defaults.
        lr_schedule: ``constant`` (Keras), ``onecycle`` (OneCycleLR over the whole run, stepped per batch), or
            ``exponential`` (``lr`` times ``lr_decay`` to the power of the epoch, counted from 0).
        channels_last: keep the weights and inputs in channels-last memory format (faster on CPU and GPU).
        lr_decay: the factor ``exponential`` multiplies the learning rate by after each epoch.
        label_smoothing: weight of the uniform distribution mixed into the one-hot targets of the training loss;
            the validation and test losses are plain cross-entropy, comparable between runs whatever it is.
        outlier_weight: weight of outlier exposure's term (Hendrycks, Mazeika and Dietterich, ICLR 2019: 0.5) in
            the training loss: the cross-entropy from the softmax to the uniform distribution, averaged over the
            batch's outliers (images labelled ``-1``, which ``data.outliers`` mixes in). The digits' cross-entropy
            and the training accuracy leave the outliers out; a batch without outliers trains exactly as before.

    Two buffers, saved in checkpoints, say how to read the network's logits (see ``python -m mnist_lit calibrate``):
    ``temperature`` (T: the probabilities are ``softmax(logits / T)``; 1 until temperature scaling fits one on the
    validation split) and ``unsure_threshold`` (an answer whose top probability is under it is "not sure"; 0: never).
    Checkpoints saved before they existed load with T = 1 and no threshold. Validation and test losses, calibration
    errors and ``predict``'s probabilities all use T; the training loss does not (T is 1 while training).

    ``ood`` (:class:`~mnist_lit.models.ood.OODScorer`) holds how unlike a digit an input is: the score's method, its
    statistics and the "not a digit" threshold, fitted after training (``--ood.method``, ``calibrate --ood``); see
    :meth:`logits_and_ood_score`. Unfitted (and in older checkpoints): the max-softmax score, never "not a digit".
    """

    # What nn.Module's attribute lookup hides from a type checker: the buffers and the saved arguments.
    temperature: Tensor
    unsure_threshold: Tensor
    hparams: AttributeDict

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.0,
        init: Literal["keras", "torch"] = "keras",
        lr_schedule: Literal["constant", "onecycle", "exponential"] = "constant",
        channels_last: bool = False,
        lr_decay: float = 0.95,
        label_smoothing: float = 0.0,
        outlier_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        # One blank image: Lightning's model summary then shows each layer's output size and FLOPs per image.
        self.example_input_array = torch.zeros(1, 1, 28, 28)
        if init == "keras":
            self.net.apply(keras_init_)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        # ModuleDict keys may not shadow Module attributes such as `train`, hence the suffixes. The inputs are an
        # argmax and verified labels, always in 0-9, so torchmetrics' per-update input checks are skipped.
        self.mean_loss = metric_dict({f"{s}_loss": MeanMetric() for s in STAGES})
        # Training batches may hold outliers (label -1), which the training accuracy ignores.
        self.accuracy = metric_dict(
            {
                f"{s}_acc": MulticlassAccuracy(
                    num_classes=10, average="micro", validate_args=False, ignore_index=OUTLIER if s == "train" else None
                )
                for s in STAGES
            }
        )
        self.confusion = metric_dict(
            {f"{s}_cm": MulticlassConfusionMatrix(num_classes=10, validate_args=False) for s in ("val", "test")}
        )
        # The top-label confidences and correctness of the epoch, binned in _evaluate (ECE, MCE, reliability diagram).
        self.calibration = metric_dict(
            {
                f"{s}_ce": MulticlassCalibrationError(num_classes=10, n_bins=N_BINS, norm="l1", validate_args=False)
                for s in ("val", "test")
            }
        )
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("unsure_threshold", torch.zeros(()))
        self.register_load_state_dict_pre_hook(_calibration_defaults)
        self.ood = OODScorer(feature_dim=_feature_dim(self.net))
        self._logged_this_epoch: set[str] = set()
        self._resumed_rng_state: dict[str, Any] | None = None
        #: The latest evaluation of each of ``val`` and ``test`` (see :meth:`_evaluate`), for the report writers.
        self.evaluations: dict[str, Evaluation] = {}
        #: What temperature scaling found after this process's fit (validation before and after), if it ran.
        self.calibration_fit: dict[str, Any] | None = None
        #: What fitting the OOD score found after this process's fit (see :mod:`mnist_lit.training.ood`), if it ran.
        self.ood_fit: dict[str, Any] | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of normalized images (N x 1 x 28 x 28)."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate features (N x D) of a batch of normalized images: the input of the output layer."""
        if not _ends_in_linear(self.net):
            raise TypeError(f"{type(self).__name__}.net must be an nn.Sequential ending in nn.Linear to give features")
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net[:-1](x)  # type: ignore[index]  # an nn.Sequential: checked above

    def logits_and_ood_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The raw logits (N x 10; T not applied) and the OOD score (N,; higher: less like a digit) in one pass.

        A network that does not end in an ``nn.Linear`` has no features to offer: its logits give the softmax scores.
        """
        if not _ends_in_linear(self.net):
            logits = self(x)
            return logits, self.ood(logits, None, self.temperature)
        features = self.features(x)
        logits = self.net[-1](features)  # type: ignore[index]  # features() checked the net
        return logits, self.ood(logits, features, self.temperature)

    def scaled_logits(self, x: Tensor) -> Tensor:
        """Logits divided by the temperature: their softmax is the network's calibrated probabilities."""
        return self(x) / self.temperature

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> dict[str, Tensor]:
        """One step of any stage: the loss, and the stage's metrics updated; they are logged per epoch.

        The metric objects accumulate over the epoch and are synchronized across processes when computed, so epoch
        values are exact under DDP whatever the shard sizes. Lightning computes a logged Metric from all of the
        epoch's updates at the epoch's end, so each is logged once per epoch, not once per step: each ``self.log``
        call costs Lightning's bookkeeping, a measurable share of a small network's step (see the benchmark page).
        """
        images, labels = batch
        logits = self(images)
        if stage == "train":
            loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing, ignore_index=OUTLIER)
            if self.hparams.outlier_weight:
                loss = loss + self.hparams.outlier_weight * uniform_cross_entropy(logits, labels == OUTLIER)
        else:
            scaled = logits / self.temperature
            loss = F.cross_entropy(scaled, labels)
        preds = logits.argmax(dim=1)
        self.mean_loss[f"{stage}_loss"].update(loss.detach(), weight=len(labels))
        self.accuracy[f"{stage}_acc"].update(preds, labels)
        if stage != "train":
            self.confusion[f"{stage}_cm"].update(preds, labels)
            self.calibration[f"{stage}_ce"].update(scaled.detach().float().softmax(dim=1), labels)
        if stage not in self._logged_this_epoch:
            self._logged_this_epoch.add(stage)
            self.log(f"{stage}/loss", self.mean_loss[f"{stage}_loss"], on_step=False, on_epoch=True, prog_bar=True)
            self.log(f"{stage}/acc", self.accuracy[f"{stage}_acc"], on_step=False, on_epoch=True, prog_bar=True)
        return {"loss": loss, "logits": logits.detach()}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Loss for the optimizer; train loss and accuracy accumulated over the epoch."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Val loss, accuracy and confusion matrix, accumulated over the epoch."""
        return self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Test loss, accuracy and confusion matrix; the logits go on to callbacks (figures of predictions)."""
        return self._shared_step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """``probabilities``: the class probabilities (N x 10), as Keras' ``predict`` returns them, at the network's
        temperature; ``ood_score`` (N,): how unlike a digit each input is, and ``not_digit`` (N,, bool)."""
        logits, score = self.logits_and_ood_score(batch[0])
        probabilities = (logits / self.temperature).softmax(dim=1)
        return {"probabilities": probabilities, "ood_score": score, "not_digit": self.ood.not_digit(score)}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log the batch's loss on the steps whose values Lightning writes (every ``log_every_n_steps``-th, counted
        after the optimizer step), which draws the same curve without paying for the calls it would drop."""
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:  # type: ignore[attr-defined]  # set by a connector
            self.log("train/batch_loss", outputs["loss"].detach(), on_step=True, on_epoch=False, prog_bar=True)

    def on_fit_start(self) -> None:
        """Training changes the logits, so a temperature fitted for the old weights no longer holds: back to 1."""
        if float(self.temperature) != 1.0 or float(self.unsure_threshold) != 0.0:
            rank_zero_warn(
                f"Training from calibrated weights: the temperature ({float(self.temperature):.4f}) and unsure "
                "threshold no longer hold and are reset; calibrate again after training (--calibrate true)."
            )
            self.temperature.fill_(1.0)
            self.unsure_threshold.zero_()
        if self.ood.fitted:
            rank_zero_warn(
                f"Training from weights with a fitted OOD score ({self.ood.method_name}): its statistics and threshold "
                "no longer hold and are reset; fit it again after training (--ood.method)."
            )
            self.ood.reset()

    def on_train_epoch_start(self) -> None:
        """Log the training metrics again in this epoch (see ``_shared_step``); after a resume, first put back the
        random state the interrupted run had at this point."""
        self._logged_this_epoch.discard("train")
        if self._resumed_rng_state is not None:
            set_rng_state(self._resumed_rng_state)
            self._resumed_rng_state = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the random state that the next training epoch starts from (it draws the dropout masks).

        Checkpoints are written at an epoch's end, after its validation; nothing draws from this state between then
        and the next epoch's first step (the data loaders have generators of their own), so a run resumed from the
        checkpoint draws the same masks as the run that never stopped.
        """
        checkpoint["rng_state"] = get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the saved random state until the resumed fit's first epoch starts (restoring it earlier would let
        the sanity check and set-up draw from it)."""
        self._resumed_rng_state = checkpoint.get("rng_state")

    def on_validation_epoch_start(self) -> None:
        """A fresh confusion matrix, so the sanity-check batches never leak into the first epoch."""
        self._start_evaluation("val")

    def on_test_epoch_start(self) -> None:
        """A test starts from an empty matrix, also when it follows a fit in the same process."""
        self._start_evaluation("test")

    def on_validation_epoch_end(self) -> None:
        """The epoch's evaluation: see :meth:`_evaluate`."""
        self._evaluate("val")

    def on_test_epoch_end(self) -> None:
        """The test's evaluation: see :meth:`_evaluate`."""
        self._evaluate("test")

    def _start_evaluation(self, stage: str) -> None:
        self._logged_this_epoch.discard(stage)
        self.confusion[f"{stage}_cm"].reset()
        self.calibration[f"{stage}_ce"].reset()
        self.evaluations.pop(stage, None)

    def _evaluate(self, stage: str) -> None:
        """Compute the stage's evaluation once, log its geometric metrics, and keep it in :attr:`evaluations`.

        The confusion matrix is summed over all processes (a collective call, made here on every process, once),
        and everything the report says about it is derived from it in one place: the geometric metrics logged
        here (so they reach the progress bar, the test table, TensorBoard and ``callback_metrics``), and the
        per-class metrics and top confusions that the writers (figures, ``metrics.json``) read after the epoch.
        """
        cm = self.confusion[f"{stage}_cm"].compute().cpu()
        if cm.sum() == 0:
            return
        summary = evaluation_summary(cm, calibration=self._calibration_summary(stage))
        self.evaluations[stage] = summary
        self.log_dict({f"{stage}/{name}": value for name, value in summary.geometric.items()}, sync_dist=False)
        errors = {f"{stage}/{name}": summary.calibration[name] for name in ("ece", "mce")}
        self.log_dict(errors, sync_dist=False)

    def _calibration_summary(self, stage: str) -> dict[str, Any]:
        """The epoch's reliability bins, ECE and MCE, from every process's confidences (a collective call)."""
        metric = self.calibration[f"{stage}_ce"]
        with metric.sync_context():
            confidences = dim_zero_cat(metric.confidences).cpu().numpy()
            accuracies = dim_zero_cat(metric.accuracies).cpu().numpy()
        metric.reset()
        bins = reliability_bins(confidences, accuracies)
        return {
            "temperature": float(self.temperature),
            "norm": "ECE: L1 (bins weighted by their share of the images); MCE: max over non-empty bins",
            **bins,
        }

    def evaluation(self, stage: str) -> Evaluation:
        """The latest finished evaluation of ``stage`` (``val`` or ``test``)."""
        if stage not in self.evaluations:
            raise RuntimeError(f"no {stage} evaluation has finished yet: read it after the {stage} epoch ends")
        return self.evaluations[stage]

    def configure_optimizers(self) -> Any:
        """Adam with Keras' defaults, and the learning-rate schedule ``lr_schedule`` names.

        Adam is the fused implementation (one kernel for all parameters) on CPU and CUDA: the same update as the
        default, which on a CPU loops over the parameters one operation at a time, and a few percent faster there.
        """
        hp = self.hparams
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        optimizer = torch.optim.Adam(
            self.parameters(), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay, fused=fused
        )
        if hp.lr_schedule == "constant":
            return optimizer
        if hp.lr_schedule == "exponential":  # Keras: LearningRateScheduler(lambda epoch: lr * decay**epoch)
            decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=hp.lr_decay)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "epoch"}}
        one_cycle = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=hp.lr, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": one_cycle, "interval": "step"}}


def _calibration_defaults(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A checkpoint saved before the calibration buffers existed loads as uncalibrated: T = 1, no threshold."""
    state_dict.setdefault(f"{prefix}temperature", torch.ones(()))
    state_dict.setdefault(f"{prefix}unsure_threshold", torch.zeros(()))


def _ends_in_linear(net: nn.Module) -> bool:
    return isinstance(net, nn.Sequential) and len(net) > 0 and isinstance(net[-1], nn.Linear)


def _feature_dim(net: nn.Module) -> int:
    """The width of the penultimate features: the output layer's input (0 for a network without one)."""
    return int(net[-1].in_features) if _ends_in_linear(net) else 0  # type: ignore[index]


def get_rng_state() -> dict[str, Any]:
    """The global random state that training draws from: PyTorch's CPU generator, and each GPU's when in use."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back a state from :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
