"""Random affine augmentation of whole batches, one transform per image, on the device the batch is on.

Keras' ``ImageDataGenerator`` (rotation, zoom, shift, shear ranges) is what the published MNIST results used; this is
the same family of transforms, drawn for a batch at once. It uses PyTorch's ``affine_grid``/``grid_sample`` with one
matrix per image rather than kornia: no extra dependency for a few lines of code, it runs on whatever device holds
the batch (one resampling call for the batch, no per-image Python loop), and each image gets its own transform,
unlike torchvision's v2 transforms, which apply one draw to a whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jsonargparse.typing import restricted_number_type
from torch import Tensor

# The ranges' types, so that the command line refuses a setting out of range before anything runs. jsonargparse makes
# them at run time, so a type checker cannot use them as annotations (hence the ignores on the fields below).
Rotation = restricted_number_type("AugmentRotation", float, [(">=", 0.0), ("<", 180.0)])
Shear = restricted_number_type("AugmentShear", float, [(">=", 0.0), ("<", 90.0)])
Fraction = restricted_number_type("AugmentFraction", float, [(">=", 0.0), ("<", 1.0)])


@dataclass(frozen=True)
class Augmentation:
    """The ranges of the random transforms, as Keras' ``ImageDataGenerator`` takes them; all zero: no augmentation.

    Args:
        rotation: degrees; each image is rotated by an angle drawn from [-rotation, rotation].
        zoom: each axis is scaled on its own by a factor drawn from [1 - zoom, 1 + zoom] (Keras' ``zoom_range``,
            which scales the sampling grid: above 1 the digit shrinks).
        shift: fraction of the image side; each image is shifted by up to this much along each axis.
        shear: degrees; a shear angle drawn from [-shear, shear].
    """

    rotation: Rotation = 0.0  # type: ignore[valid-type]
    zoom: Fraction = 0.0  # type: ignore[valid-type]
    shift: Fraction = 0.0  # type: ignore[valid-type]
    shear: Shear = 0.0  # type: ignore[valid-type]

    def __post_init__(self) -> None:
        """Check each range, also when built in Python, and keep it as a plain float: the command line's range types
        are classes of jsonargparse's, which a checkpoint read weights-only could not hold."""
        for name, kind in (("rotation", Rotation), ("zoom", Fraction), ("shift", Fraction), ("shear", Shear)):
            try:
                value = float(kind(getattr(self, name)))
            except ValueError as err:
                raise ValueError(f"augmentation {name}: {err}") from None
            object.__setattr__(self, name, value)

    @property
    def is_identity(self) -> bool:
        """Whether every range is zero, so the transforms would leave the images as they are."""
        return all(float(value) == 0.0 for value in (self.rotation, self.zoom, self.shift, self.shear))


def random_affine_matrices(
    n: int, height: int, width: int, augmentation: Augmentation, generator: torch.Generator | None = None
) -> Tensor:
    """``n`` random matrices (n x 2 x 3) for :func:`affine_grid`, each mapping output to input coordinates.

    The parameters are drawn from ``generator`` on its own device; six uniform numbers per image, whatever the
    ranges, so that the same generator state gives the same draws for any setting. Each matrix is rotation x shear x
    zoom about the image centre, plus the shift, as Keras composes them, built in pixels and converted to
    ``affine_grid``'s [-1, 1] coordinates (which differ from pixels by the side length per axis).
    """
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, 6, generator=generator, device=device, dtype=torch.float64) * 2 - 1
    a = augmentation
    angle, shear = torch.deg2rad(a.rotation * u[:, 0]), torch.deg2rad(a.shear * u[:, 1])
    zoom_x, zoom_y = 1 + a.zoom * u[:, 2], 1 + a.zoom * u[:, 3]
    shift_x, shift_y = a.shift * width * u[:, 4], a.shift * height * u[:, 5]  # pixels
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shearing = torch.zeros(n, 2, 2, dtype=torch.float64, device=device)
    shearing[:, 0, 0], shearing[:, 0, 1], shearing[:, 1, 1] = 1.0, -torch.sin(shear), torch.cos(shear)
    zooming = torch.diag_embed(torch.stack([zoom_x, zoom_y], -1))
    linear = rotation @ shearing @ zooming  # in pixels about the centre
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64, device=device)
    theta = torch.empty(n, 2, 3, dtype=torch.float64, device=device)
    theta[:, :, :2] = linear * half / half[:, None]  # S^-1 A S, with S = diag(width / 2, height / 2)
    theta[:, :, 2] = torch.stack([shift_x, shift_y], -1) / half
    return theta


def apply_affine(images: Tensor, theta: Tensor) -> Tensor:
    """Resample each image (N x C x H x W, float) through its own matrix (N x 2 x 3), bilinearly.

    Pixels that come from outside the image are 0, so the images must be in a scale where 0 is the background
    (pixels / 255, before any standardization).
    """
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(images: Tensor, augmentation: Augmentation, generator: torch.Generator | None = None) -> Tensor:
    """Each image (N x C x H x W, float, background 0) moved by its own random affine transform, drawn from
    ``generator``; the images themselves, untouched, when every range is zero."""
    if augmentation.is_identity:
        return images
    n, _, height, width = images.shape
    return apply_affine(images, random_affine_matrices(n, height, width, augmentation, generator))
