"""What a network is fed: MNIST's image side and classes, and the two normalizations of its pixels.

The data module, the runners that take raw pixels (PyTorch and exported) and the exporters all take the formula and
its constants from here; this module imports nothing heavy, so none of them needs the Lightning data module for it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypeVar

IMAGE_SIDE = 28
NUM_CLASSES = 10
#: Mean and std of the MNIST training pixels after /255, the usual constants for standardization.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

#: ``unit``: pixels / 255 (both notebooks); ``standardize``: then minus MNIST_MEAN, over MNIST_STD.
Normalization = Literal["unit", "standardize"]


class _Array(Protocol):
    """What a numpy ``ndarray`` and a torch ``Tensor`` both do (neither is imported here)."""

    def __truediv__(self, other: float) -> Any: ...


#: A numpy array or a torch tensor of pixels.
Pixels = TypeVar("Pixels", bound=_Array)


def to_unit(pixels: Pixels) -> Pixels:
    """Pixel values 0-255 (integers or floats) as floats 0-1: a new array or tensor."""
    return pixels / 255.0


def standardize(x: Pixels, normalization: Normalization) -> Pixels:
    """``x`` (pixels / 255), standardized in place when ``normalization`` is ``standardize``."""
    if normalization == "standardize":
        same: Any = x  # the same array, changed in place (a float array or tensor does both operations)
        same -= MNIST_MEAN
        same /= MNIST_STD
    return x


def normalize(pixels: Pixels, normalization: Normalization) -> Pixels:
    """Pixel values 0-255 as the network takes them."""
    return standardize(to_unit(pixels), normalization)


def formula(normalization: Normalization) -> str:
    """The normalization as a person reads it."""
    return "pixels / 255" if normalization == "unit" else f"(pixels / 255 - {MNIST_MEAN}) / {MNIST_STD}"
