"""How unlike a digit an input is: out-of-distribution scores from a network's logits or penultimate features.

Every score follows one convention: **higher means less like a digit**. An input is "not a digit" when its score is
above the threshold (fitted after training by :mod:`mnist_lit.training.ood`: by default the score that keeps 99% of
the validation digits as digits).

- ``max_softmax``: minus the top probability, ``-max softmax(z / T)`` (Hendrycks and Gimpel 2017);
- ``energy``: ``-T logsumexp(z / T)`` (Liu et al. 2020, their temperature being the network's calibrated T; 1 when
  uncalibrated);
- ``mahalanobis``: the squared Mahalanobis distance of the penultimate features f to the nearest class mean, with one
  covariance shared by the classes (Lee et al. 2018), divided by the number of features:
  ``min_c (f - mu_c)^T Sigma^-1 (f - mu_c) / D``, about 1 for training digits. It needs no temperature.
- ``mahalanobis_normalized``: the same on the features scaled to unit length, ``f / |f|``, with the means and the
  covariance fitted on the unit-length training features (Mueller and Hein 2025, "Mahalanobis++"). The length of f
  mostly says how much ink there is; a class's spread along it makes the plain distance let faint inputs (noise,
  specks: short feature vectors) pass as typical digits.

z are the raw logits and T the network's temperature (``MNISTClassifier.temperature``): the softmax scores read the
probabilities the network answers with. The covariance is stored as a whitening matrix W with ``W W^T = Sigma^-1``
(from its eigendecomposition), so that the distance is a sum of squares, ``|(f - mu_c) W|^2``, which float32 (and an
ONNX graph) computes without the cancellation of the quadratic form.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

#: The scores, in the order of the ``method`` buffer's codes.
OOD_METHODS = ("max_softmax", "energy", "mahalanobis", "mahalanobis_normalized")
#: Added to the shared covariance, times its mean variance, before it is inverted: features that never vary on the
#: training digits (a ReLU that never fires) make the covariance singular. An input that moves them is far.
COVARIANCE_RIDGE = 1e-3


def max_softmax_score(logits: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """``-max softmax(logits / T)`` per row: higher is less like a digit."""
    return -(logits / temperature).softmax(dim=1).amax(dim=1)


def energy_score(logits: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """The energy ``-T logsumexp(logits / T)`` per row: higher is less like a digit."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def mahalanobis_score(features: Tensor, class_means: Tensor, whitening: Tensor) -> Tensor:
    """``min_c |(f - mu_c) W|^2 / D``: the squared Mahalanobis distance to the nearest class mean, per feature."""
    # The differences first, then W: whitening f and mu_c apart would subtract two large numbers where W is large.
    whitened = (features[:, None, :] - class_means[None, :, :]) @ whitening
    return whitened.pow(2).sum(dim=2).amin(dim=1) / features.shape[1]


def uses_features(method: str) -> bool:
    """Whether ``method`` reads the penultimate features (and fitted statistics), not only the logits."""
    return method.startswith("mahalanobis")


def unit_length(features: Tensor) -> Tensor:
    """Each row scaled to unit Euclidean length (a zero row stays zero)."""
    return features / torch.linalg.vector_norm(features, dim=1, keepdim=True).clamp_min(1e-12)


def ood_score(
    method: str,
    logits: Tensor,
    features: Tensor | None,
    temperature: float | Tensor = 1.0,
    class_means: Tensor | None = None,
    whitening: Tensor | None = None,
) -> Tensor:
    """The score (N,) that ``method`` gives each input, from its raw ``logits``, its penultimate ``features`` and,
    for the feature scores, the fitted statistics. ``method`` is a plain string, so that an exported graph holds the
    one score it names."""
    if method == "max_softmax":
        return max_softmax_score(logits, temperature)
    if method == "energy":
        return energy_score(logits, temperature)
    if method not in OOD_METHODS:
        raise ValueError(f"unknown OOD method {method!r}; choose one of {', '.join(OOD_METHODS)}")
    if features is None or class_means is None or whitening is None:
        raise ValueError(f"the {method} score needs the penultimate features and the fitted statistics")
    if method == "mahalanobis_normalized":
        features = unit_length(features)
    return mahalanobis_score(features, class_means, whitening)


def mahalanobis_statistics(
    features: Tensor, labels: Tensor, num_classes: int = 10, ridge: float = COVARIANCE_RIDGE
) -> tuple[Tensor, Tensor]:
    """The class means (C x D) and the whitening matrix W (D x D, ``W W^T`` the inverse of the shared covariance) of
    ``features`` (N x D) with ``labels`` (N,), computed in float64.

    The shared covariance is that of the features around their own class's mean (Lee et al. 2018), plus ``ridge``
    times its mean variance on the diagonal.
    """
    f = features.detach().double().cpu()
    y = labels.detach().long().cpu()
    missing = [c for c in range(num_classes) if not bool((y == c).any())]
    if missing:
        raise ValueError(f"no training features of class {missing}: the class means cannot be fitted")
    means = torch.stack([f[y == c].mean(dim=0) for c in range(num_classes)])
    centred = f - means[y]
    covariance = centred.T @ centred / len(f)
    scale = float(covariance.diagonal().mean()) or 1.0
    covariance += ridge * scale * torch.eye(f.shape[1], dtype=torch.float64)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    whitening = eigenvectors * eigenvalues.clamp_min(ridge * scale).rsqrt()
    return means.float(), whitening.float()


class OODScorer(nn.Module):
    """The out-of-distribution score a network was fitted with, and its threshold, as buffers (saved in checkpoints).

    Buffers: ``method`` (an index into :data:`OOD_METHODS`), ``threshold`` (an input scoring above it is "not a
    digit"; ``inf`` until fitted: never), ``class_means`` (C x D) and ``whitening`` (D x D) for the Mahalanobis
    scores (zeros otherwise; for ``mahalanobis_normalized``, those of the unit-length features). Unfitted, it scores
    ``max_softmax``, which needs nothing fitted, and calls nothing "not a digit"; checkpoints saved before it existed
    load so.

    Args:
        feature_dim: D, the width of the network's penultimate features (0 when it has none to offer).
        num_classes: C.
    """

    method: Tensor
    threshold: Tensor
    class_means: Tensor
    whitening: Tensor

    def __init__(self, feature_dim: int, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("method", torch.zeros((), dtype=torch.long))
        self.register_buffer("threshold", torch.full((), float("inf")))
        self.register_buffer("class_means", torch.zeros(num_classes, feature_dim))
        self.register_buffer("whitening", torch.zeros(feature_dim, feature_dim))
        self.register_load_state_dict_pre_hook(_unfitted_defaults)

    @property
    def method_name(self) -> str:
        """The score's name: one of :data:`OOD_METHODS`."""
        return OOD_METHODS[int(self.method)]

    @property
    def fitted(self) -> bool:
        """Whether a threshold has been fitted (until then no input is "not a digit")."""
        return bool(torch.isfinite(self.threshold))

    @property
    def needs_features(self) -> bool:
        """Whether the score reads the penultimate features (else only the logits)."""
        return uses_features(self.method_name)

    def forward(self, logits: Tensor, features: Tensor | None, temperature: float | Tensor = 1.0) -> Tensor:
        """The score (N,) of each input, from its raw ``logits`` (N x C), penultimate ``features`` (N x D; only
        the Mahalanobis scores read them) and the network's ``temperature``."""
        return ood_score(self.method_name, logits, features, temperature, self.class_means, self.whitening)

    def not_digit(self, scores: Tensor) -> Tensor:
        """Which scores are above the threshold: "not a digit" (none until fitted)."""
        return scores > self.threshold

    @torch.no_grad()
    def set(
        self,
        method: str,
        threshold: float,
        class_means: Tensor | None = None,
        whitening: Tensor | None = None,
    ) -> None:
        """Store a fitted score: its method, threshold and (Mahalanobis) statistics, in place."""
        if method not in OOD_METHODS:
            raise ValueError(f"unknown OOD method {method!r}; choose one of {', '.join(OOD_METHODS)}")
        if uses_features(method):
            if class_means is None or whitening is None:
                raise ValueError(f"the {method} score needs the class means and the whitening matrix")
            if class_means.shape != self.class_means.shape or whitening.shape != self.whitening.shape:
                raise ValueError(
                    f"statistics of shape {tuple(class_means.shape)} and {tuple(whitening.shape)} do not fit this "
                    f"network's features ({tuple(self.class_means.shape)}, {tuple(self.whitening.shape)})"
                )
            self.class_means.copy_(class_means)
            self.whitening.copy_(whitening)
        else:
            self.class_means.zero_()
            self.whitening.zero_()
        self.method.fill_(OOD_METHODS.index(method))
        self.threshold.fill_(threshold)

    def reset(self) -> None:
        """Back to unfitted: ``max_softmax``, no threshold."""
        self.set("max_softmax", float("inf"))

    def describe(self) -> dict[str, Any]:
        """The method and threshold (None when unfitted), for reports and metadata."""
        return {"method": self.method_name, "threshold": float(self.threshold) if self.fitted else None}


def _unfitted_defaults(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """A checkpoint saved before the OOD buffers existed loads as unfitted (``max_softmax``, no threshold)."""
    if not isinstance(module, OODScorer):
        return
    state_dict.setdefault(f"{prefix}method", torch.zeros((), dtype=torch.long))
    state_dict.setdefault(f"{prefix}threshold", torch.full((), float("inf")))
    state_dict.setdefault(f"{prefix}class_means", torch.zeros_like(module.class_means))
    state_dict.setdefault(f"{prefix}whitening", torch.zeros_like(module.whitening))
