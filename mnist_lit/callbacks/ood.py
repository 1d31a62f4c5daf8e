"""How well a network tells digits from what is not a digit, measured at test time on families training never saw.

:class:`OODReport` scores the test digits and a fixed, seeded set of each held-out outlier family
(:data:`~mnist_lit.data.outliers.HELD_OUT_FAMILIES`: other fonts, hand-drawn letters, uniform and Gaussian noise,
patches of photographs) with max-softmax, energy and the network's fitted score (Mahalanobis when fitted so), and
writes, per family and score, the AUROC and the false-positive rate at 95% true-positive rate (digits are the
positives), and, at the fitted threshold, the share of each called "not a digit". The letters written like digits
(O, l, S, Z, B...) are reported apart, never pooled with the non-digits. ``MetricsReport`` puts the result in
``metrics.json`` as ``ood``; the ROC curves go to ``figures/ood_roc.png``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from mnist_lit.callbacks.run_folder import emit_figure, require_classifier, require_datamodule
from mnist_lit.data.outliers import HELD_OUT_FAMILIES, MissingSourceError, digit_like_letters, family_rng, generate
from mnist_lit.models.ood import energy_score, max_softmax_score, uses_features
from mnist_lit.reporting.ood import detection_summary, roc_figure

if TYPE_CHECKING:
    from mnist_lit.models.base import MNISTClassifier

#: The seed of the evaluation's outlier images: fixed, and unlike the training pools' (``data.outliers.seed``).
EVALUATION_SEED = 2026
DIGIT_LIKE_SET = "digit_like_letters"


def held_out_sets(per_family: int = 500, seed: int = EVALUATION_SEED) -> tuple[dict[str, np.ndarray], list[str]]:
    """``per_family`` images of each held-out family and of the digit-like letters, and the families that could
    not be made (their package missing), with the reason."""
    sets: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for name in HELD_OUT_FAMILIES:
        try:
            sets[name] = generate(name, per_family, seed)
        except MissingSourceError as err:
            missing.append(f"{name}: {err}")
    sets[DIGIT_LIKE_SET] = digit_like_letters(family_rng(seed, DIGIT_LIKE_SET), per_family)
    return sets, missing


@torch.no_grad()
def network_outputs(
    model: MNISTClassifier, normalize: Any, images: np.ndarray | Tensor, batch_size: int = 1000
) -> tuple[Tensor, Tensor | None]:
    """Raw logits (N x 10) and penultimate features (N x D, None for a network without them) of uint8 images
    (N x 28 x 28), normalized by ``normalize`` (the data module's), in eval mode, on the CPU."""
    pixels = torch.as_tensor(images)
    was_training = model.training
    model.eval()
    logits, features = [], []
    try:
        for start in range(0, len(pixels), batch_size):
            x = normalize(pixels[start : start + batch_size].unsqueeze(1).to(model.device))
            try:
                f = model.features(x)
            except TypeError:
                logits.append(model(x).float().cpu())
                continue
            features.append(f.float().cpu())
            logits.append(model.net[-1](f).float().cpu())  # type: ignore[index]  # features() checked the net
    finally:
        model.train(was_training)
    return torch.cat(logits), (torch.cat(features) if features else None)


def all_scores(model: MNISTClassifier, logits: Tensor, features: Tensor | None) -> dict[str, np.ndarray]:
    """Max-softmax and energy (at the network's temperature) and, when the network's fitted score is another, that
    one too: each higher for what is less like a digit."""
    temperature = model.temperature.detach().cpu()
    scores = {
        "max_softmax": max_softmax_score(logits, temperature).numpy(),
        "energy": energy_score(logits, temperature).numpy(),
    }
    method = model.ood.method_name
    if method not in scores and uses_features(method) and features is not None:
        with torch.no_grad():
            scorer = model.ood.to("cpu")
            scores[method] = scorer(logits, features, temperature).numpy()
            model.ood.to(model.device)
    return scores


def ood_evaluation(
    model: MNISTClassifier, digits: dict[str, np.ndarray], others: dict[str, dict[str, np.ndarray]]
) -> dict[str, Any]:
    """The report: for each score (``digits``: score -> the test digits' scores; ``others``: family -> score ->
    scores), per family AUROC, FPR at 95% TPR and, for the fitted score at its threshold, the share called "not a
    digit"; ``all_held_out`` pools the non-digit families (not the digit-like letters)."""
    fitted = model.ood.describe()
    threshold = fitted["threshold"]

    def summary(score: str, other: np.ndarray) -> dict[str, Any]:
        return detection_summary(digits[score], other, threshold if score == fitted["method"] else None)

    families = {family: {score: summary(score, values) for score, values in by_score.items()}
                for family, by_score in others.items()}  # fmt: skip
    pooled = [family for family in others if family != DIGIT_LIKE_SET]
    report: dict[str, Any] = {
        "fitted": fitted,
        "digits": len(next(iter(digits.values()))),
        "scores": list(digits),
        "families": families,
        "all_held_out": {score: summary(score, np.concatenate([others[f][score] for f in pooled])) for score in digits},
        "note": "digits are the positives; fpr_at_95_tpr: share of non-digits taken for digits when 95% of the test "
        f"digits are kept; {DIGIT_LIKE_SET} (O o I l i S s Z z B b g q D) are reported apart, not pooled",
    }
    if threshold is not None:
        report["test_digits_not_digit"] = float((digits[fitted["method"]] > threshold).mean())
    return report


class OODReport(Callback):
    """At the end of ``test``, measure "not a digit" on held-out outlier families (see the module's docstring).

    Args:
        per_family: images of each held-out family (seeded with :data:`EVALUATION_SEED`, the same for every run).
        dpi: resolution of ``figures/ood_roc.png``.
    """

    def __init__(self, per_family: int = 500, dpi: int = 110) -> None:
        self.per_family = per_family
        self.dpi = dpi
        #: The latest test's report (see :func:`ood_evaluation`), for ``MetricsReport``.
        self.result: dict[str, Any] | None = None
        self._sets: dict[str, np.ndarray] | None = None
        self._missing: list[str] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_classifier(self, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score the test digits and the held-out sets on process 0 (the sets are small; the test split whole)."""
        self.result = None
        if not trainer.is_global_zero:
            return
        data = require_datamodule(self, trainer)
        test = data.data_test
        if test is None:
            return
        model = require_classifier(self, pl_module)
        if self._sets is None:
            self._sets, self._missing = held_out_sets(self.per_family)
            for reason in self._missing:
                rank_zero_warn(f"OODReport: family left out ({reason})")
        with torch.inference_mode(False), torch.no_grad():
            digit_scores = all_scores(model, *network_outputs(model, data.normalize, test.images.cpu()))
            others = {
                name: all_scores(model, *network_outputs(model, data.normalize, images))
                for name, images in self._sets.items()
            }
        self.result = ood_evaluation(model, digit_scores, others)
        self.result["missing_families"] = self._missing
        method = model.ood.method_name
        curves = {f"{family} ({method})": (digit_scores[method], by_score[method])
                  for family, by_score in others.items()}  # fmt: skip
        emit_figure(trainer, "ood_roc", roc_figure(curves, f"Test digits against held-out non-digits: {method}"),
                    self.dpi)  # fmt: skip
