"""Distortions that make MNIST's digits look like other people's: pens, scanners, cameras and resolutions.

MNIST's digits were written with similar pens, scanned at one resolution and centred one way; digits from elsewhere
differ in stroke width, sharpness, resolution (scikit-learn's 8 x 8 digits), compression artefacts, the evenness of
the paper, and sometimes in polarity. Each distortion here is applied to a random share of a training batch's images
(its probability; 0 switches it off), one draw per image from the batch's generator, on whatever device holds the
batch, after the random affine transform (which covers position, scale, rotation and shear: see
:class:`~mnist_lit.data.augment.Augmentation`). Images are N x 1 x H x W floats in [0, 1], background 0; each
distortion keeps the shape, the range and the order of the images (and so their labels).

They are a few tensor operations each (PyTorch's pooling, convolution and interpolation, Pillow's JPEG codec),
written here rather than taken from a library because each image needs its own draw and the batch stays on its device
(torchvision's v2 transforms draw once per call).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval
from PIL import Image
from torch import Tensor

#: A probability, checked by the command line before anything runs (jsonargparse makes the type at run time).
Probability = ClosedUnitInterval


@dataclass(frozen=True)
class Distortions:
    """The probability of each distortion per training image; all zero (the default): none.

    Args:
        thicker: the strokes thickened by a grey dilation (2 x 2 or 3 x 3): a broad pen or a marker.
        thinner: the strokes thinned by a 2 x 2 grey erosion: a fine pen (a stroke never vanishes: the erosion is
            mixed back with the original where it would remove more than half of the ink).
        low_resolution: shrunk to a side drawn from ``min_side``-16 pixels (area average) and enlarged back
            (bilinear): an 8 x 8 scan, or a small photo scaled up.
        min_side: the smallest side ``low_resolution`` shrinks to (8: scikit-learn's digits).
        blur: a Gaussian blur of a standard deviation drawn from 0.5-``max_sigma`` pixels: out of focus.
        max_sigma: the largest blur.
        invert: the polarity flipped (dark ink on light paper), for inputs that skip the usual inversion.
        jpeg: saved as a JPEG of a quality drawn from 10-60 and read back: compression artefacts.
        background: a smooth uneven background added under the ink, a ramp of up to ``max_background`` of full
            brightness across the image in a random direction: paper lit from one side.
        max_background: the strongest background ramp (fraction of full brightness).
    """

    thicker: Probability = 0.0  # type: ignore[valid-type]
    thinner: Probability = 0.0  # type: ignore[valid-type]
    low_resolution: Probability = 0.0  # type: ignore[valid-type]
    min_side: int = 8
    blur: Probability = 0.0  # type: ignore[valid-type]
    max_sigma: float = 1.5
    invert: Probability = 0.0  # type: ignore[valid-type]
    jpeg: Probability = 0.0  # type: ignore[valid-type]
    background: Probability = 0.0  # type: ignore[valid-type]
    max_background: float = 0.35

    def __post_init__(self) -> None:
        """Check each probability (also when built in Python) and keep plain floats (checkpoints are read
        weights-only, and jsonargparse's range types are its own classes)."""
        for name in PROBABILITIES:
            try:
                value = float(Probability(getattr(self, name)))
            except ValueError as err:
                raise ValueError(f"distortion {name}: {err}") from None
            object.__setattr__(self, name, value)
        if not 4 <= int(self.min_side) <= 16:
            raise ValueError(f"distortion min_side: {self.min_side} is not in 4-16")
        if not 0.5 <= float(self.max_sigma) <= 4.0:
            raise ValueError(f"distortion max_sigma: {self.max_sigma} is not in 0.5-4")
        if not 0.0 < float(self.max_background) <= 1.0:
            raise ValueError(f"distortion max_background: {self.max_background} is not in (0, 1]")
        object.__setattr__(self, "min_side", int(self.min_side))
        object.__setattr__(self, "max_sigma", float(self.max_sigma))
        object.__setattr__(self, "max_background", float(self.max_background))

    @property
    def is_identity(self) -> bool:
        """Whether every probability is zero, so nothing would change."""
        return all(getattr(self, name) == 0.0 for name in PROBABILITIES)


#: The fields that are probabilities, in the order the distortions are applied.
PROBABILITIES = ("thicker", "thinner", "low_resolution", "blur", "jpeg", "background", "invert")
assert set(PROBABILITIES) <= {f.name for f in fields(Distortions)}


def thicker(images: Tensor, u: Tensor) -> Tensor:
    """Grey dilation, 2 x 2 when ``u`` < 0.5, else 3 x 3 (``u``: one uniform number per image)."""
    small = F.max_pool2d(F.pad(images, (0, 1, 0, 1)), 2, stride=1)
    large = F.max_pool2d(images, 3, stride=1, padding=1)
    return torch.where((u < 0.5).view(-1, 1, 1, 1), small, large)


def thinner(images: Tensor) -> Tensor:
    """Grey erosion by 2 x 2, mixed back with the original where it would leave less than half of the ink."""
    eroded = -F.max_pool2d(F.pad(-images, (0, 1, 0, 1), value=-1.0), 2, stride=1)
    kept = eroded.sum((1, 2, 3)) / images.sum((1, 2, 3)).clamp_min(1e-6)
    mix = (0.5 - kept).clamp(0.0, 0.5).div(0.5).view(-1, 1, 1, 1)  # 0: the erosion alone; 1: the original
    return eroded * (1 - mix) + images * mix


def low_resolution(images: Tensor, u: Tensor, min_side: int) -> Tensor:
    """Each image shrunk to a side between ``min_side`` and 16 (area average) and enlarged back (bilinear),
    stretched again so that its brightest ink is as bright as before."""
    side = images.shape[-1]
    out = torch.empty_like(images)
    sides = (min_side + u * (16 - min_side + 1)).floor().clamp(max=16).long()
    for s in sides.unique().tolist():
        chosen = sides == s
        small = F.interpolate(images[chosen], size=(s, s), mode="area")
        out[chosen] = F.interpolate(small, size=(side, side), mode="bilinear", align_corners=False)
    return _restretch(out, images)


def blur(images: Tensor, u: Tensor, max_sigma: float) -> Tensor:
    """A Gaussian blur of each image with its own standard deviation, 0.5 to ``max_sigma`` pixels (one grouped
    convolution for the batch), stretched back to the original's brightest ink."""
    n = len(images)
    sigma = 0.5 + u * (max_sigma - 0.5)
    radius = int(2 * max_sigma + 0.5)
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-(x[None] ** 2) / (2 * sigma[:, None].to(images.dtype) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)
    flat = images.reshape(1, n, *images.shape[-2:])
    rows = F.conv2d(F.pad(flat, (radius, radius, 0, 0)), kernel.view(n, 1, 1, -1), groups=n)
    both = F.conv2d(F.pad(rows, (0, 0, radius, radius)), kernel.view(n, 1, -1, 1), groups=n)
    return _restretch(both.view_as(images), images)


def jpeg(images: Tensor, u: Tensor) -> Tensor:
    """Each image saved as a JPEG of quality 10-60 and read back (Pillow's libjpeg, on the CPU)."""
    pixels = images.detach().mul(255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    quality = (10 + u * 51).floor().clamp(max=60).long().tolist()
    decoded = []
    for image, q in zip(pixels, quality, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image[0]).save(buffer, format="JPEG", quality=q)
        buffer.seek(0)
        decoded.append(np.asarray(Image.open(buffer).convert("L")))
    return torch.from_numpy(np.stack(decoded)).unsqueeze(1).to(device=images.device, dtype=images.dtype).div(255)


def background(images: Tensor, u: Tensor, max_level: float) -> Tensor:
    """A linear ramp from 0 to up to ``max_level`` across each image, in its own direction, under the ink."""
    n, _, height, width = images.shape
    angle = u[:, 0] * 2 * torch.pi
    level = (u[:, 1] * max_level).to(images.dtype)
    ys = torch.linspace(-0.5, 0.5, height, device=images.device, dtype=images.dtype)
    xs = torch.linspace(-0.5, 0.5, width, device=images.device, dtype=images.dtype)
    ramp = torch.cos(angle).to(images.dtype).view(n, 1, 1) * xs.view(1, 1, -1)
    ramp = ramp + torch.sin(angle).to(images.dtype).view(n, 1, 1) * ys.view(1, -1, 1)
    ramp = ramp - ramp.amin((1, 2), keepdim=True)
    ramp = ramp / ramp.amax((1, 2), keepdim=True).clamp_min(1e-6) * level.view(n, 1, 1)
    return torch.maximum(images, ramp.unsqueeze(1))


def invert(images: Tensor) -> Tensor:
    """Dark ink on light paper."""
    return 1.0 - images


def _restretch(distorted: Tensor, original: Tensor) -> Tensor:
    """``distorted`` scaled so that each image's brightest pixel matches the original's (as ``mnist_preprocess``
    stretches a user's ink to full brightness), within [0, 1]."""
    peak = distorted.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (distorted * original.amax((1, 2, 3), keepdim=True) / peak).clamp(0.0, 1.0)


def distort(images: Tensor, distortions: Distortions, generator: torch.Generator | None = None) -> Tensor:
    """Each distortion applied to its share of ``images`` (N x 1 x H x W floats in [0, 1]), chosen and drawn per
    image from ``generator``; the images themselves, untouched, when every probability is zero.

    Three uniform numbers per image and distortion are drawn whatever the probabilities, so that the same generator
    state gives the same choices for any setting.
    """
    if distortions.is_identity:
        return images
    n = len(images)
    device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.rand(len(PROBABILITIES), 3, n, generator=generator, device=device, dtype=torch.float64)
    draws = draws.to(images.device)
    out = images.clone()
    for (choose, a, b), name in zip(draws, PROBABILITIES, strict=True):
        chosen = choose < getattr(distortions, name)
        if not bool(chosen.any()):
            continue
        x, ua, ub = out[chosen], a[chosen], b[chosen]
        if name == "thicker":
            x = thicker(x, ua)
        elif name == "thinner":
            x = thinner(x)
        elif name == "low_resolution":
            x = low_resolution(x, ua, distortions.min_side)
        elif name == "blur":
            x = blur(x, ua, distortions.max_sigma)
        elif name == "jpeg":
            x = jpeg(x, ua)
        elif name == "background":
            x = background(x, torch.stack([ua, ub], 1), distortions.max_background)
        else:
            x = invert(x)
        out[chosen] = x
    return out
