"""What in an image made the network answer: Captum attributions of the top digit's (temperature-scaled) logit.

- ``ig``: integrated gradients (Sundararajan et al. 2017) from a black image, 32 steps: signed, positive where ink
  pushes towards the digit. The default.
- ``saliency``: the absolute gradient of the logit with respect to each pixel.
- ``gradcam``: Grad-CAM on the last convolution (``LayerGradCam`` with ``relu_attributions=True``: only what speaks
  for the digit), upsampled to 28 x 28 with ``LayerAttribution.interpolate``.

Attributions need gradients, so they run on the PyTorch network; an ONNX export cannot be explained. Captum is an
optional extra (``pip install -e '.[explain]'``), imported only when an attribution is asked for. Every command that
explains (``predict --explain``, ``classify --explain``, ``serve``'s ``?explain=``) takes its methods from
:data:`METHODS` and writes its figures with :func:`save_explanations`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from mnist_lit.errors import UserError
from mnist_lit.utils.io import free_name

if TYPE_CHECKING:  # torch is imported by the functions that use it: the method list serves commands without torch
    from torch import Tensor, nn

#: The attribution methods, as options take them (``--explain ig``).
ExplainMethod = Literal["ig", "saliency", "gradcam"]
METHODS: tuple[str, ...] = get_args(ExplainMethod)
DESCRIPTIONS = {
    "ig": "integrated gradients",
    "saliency": "saliency (|gradient|)",
    "gradcam": "Grad-CAM, last convolution",
}
IG_STEPS = 32
#: Images per forward pass inside integrated gradients (IG_STEPS copies of each input): bounds its memory.
IG_BATCH = 256


class ExplainError(UserError):
    """An attribution that cannot be made as asked: an unknown method, no Captum, a network without convolutions."""


def last_conv(module: nn.Module) -> nn.Conv2d:
    """The last ``Conv2d`` of ``module``, where Grad-CAM looks."""
    from torch import nn

    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ExplainError("gradcam needs a network with a convolution; use --explain ig or saliency")
    return convs[-1]


def require_captum() -> None:
    """Fail before any work, with the install command, where Captum is missing (it is an optional extra)."""
    if importlib.util.find_spec("captum") is None:
        raise ExplainError("--explain needs Captum: pip install captum (or pip install -e '.[explain]')")


def attribute(
    module: nn.Module,
    inputs: Tensor,
    method: str = "ig",
    forward: Callable[[Tensor], Tensor] | None = None,
    baseline: Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Attribution maps (N x 28 x 28, finite) of each input's most likely digit, and those digits (N,).

    Args:
        module: the network (searched for its last convolution for ``gradcam``).
        inputs: the images as ``forward`` takes them (N x 1 x 28 x 28).
        method: ``ig``, ``saliency`` or ``gradcam``.
        forward: inputs to logits; by default ``module.logits`` if it has one (PixelClassifier), else ``module``.
        baseline: integrated gradients' starting image (default: zeros, a black image in raw pixels).
    """
    import torch

    if method not in METHODS:
        raise ExplainError(f"--explain {method}: unknown method; choose one of {', '.join(METHODS)}")
    try:
        from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
    except ImportError as err:
        raise ExplainError(
            f"--explain needs Captum: pip install captum (or pip install -e '.[explain]') ({err})"
        ) from err
    if forward is None:
        forward = getattr(module, "logits", module)
    assert forward is not None
    with torch.inference_mode(False), torch.enable_grad():
        x = inputs.detach().clone().float().requires_grad_(True)
        with torch.no_grad():
            target = forward(x).argmax(dim=1)
        if method == "ig":
            base = torch.zeros_like(x) if baseline is None else baseline.detach().clone().float().expand_as(x)
            maps = IntegratedGradients(forward).attribute(
                x, baselines=base, target=target, n_steps=IG_STEPS, internal_batch_size=IG_BATCH
            )
        elif method == "saliency":
            maps = Saliency(forward).attribute(x, target=target, abs=True)
        else:
            coarse = LayerGradCam(forward, last_conv(module)).attribute(x, target=target, relu_attributions=True)
            maps = LayerAttribution.interpolate(coarse, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    result = torch.nan_to_num(maps.detach().float()).sum(dim=1).cpu().numpy()
    return result, target.cpu().numpy()


def save_explanations(
    folder: Path,
    stems: Sequence[str],
    images: np.ndarray,
    maps: np.ndarray,
    titles: Sequence[str],
    method: str,
    dpi: int = 110,
) -> list[Path]:
    """One figure per input, ``<folder>/<stem>.<method>.png``: the image (28 x 28) beside its attribution map.

    A stem is made safe as a file name (at most 60 characters); an existing figure is never replaced (the new one
    gets a free name, ``<stem>.<method>-1.png``)."""
    from mnist_lit.reporting.plots import attribution_figure  # matplotlib, only when figures are drawn

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, image, attribution, title in zip(stems, images, maps, titles, strict=True):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60]
        out = free_name(folder / f"{safe}.{method}.png", keep_suffix=True)
        attribution_figure(image, attribution, title, method).savefig(out, dpi=dpi)
        written.append(out)
    return written
