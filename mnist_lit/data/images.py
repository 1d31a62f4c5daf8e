"""A user's own digit images: finding and reading the files, and preparing each digit the way MNIST's were.

MNIST's digits are light on dark, scaled to fit a 20x20 box with their aspect ratio kept, and placed in a 28x28
field with their centre of mass at pixel (14, 14) (LeCun et al.). A network trained on MNIST has only ever seen
digits like that, so :func:`mnist_preprocess` puts any picture of a digit into the same form. Everything here is
a plain function of arrays and paths, with no Lightning inside.
"""

from __future__ import annotations

import glob
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps

from mnist_lit.data.idx import IMAGE_SIDE
from mnist_lit.errors import UserError

InvertMode = Literal["auto", "always", "never"]

#: The side of the box MNIST's digits are scaled to fit (its images are IMAGE_SIDE pixels square).
BOX_SIDE = 20
#: MNIST puts a digit's centre of mass here (row, column), in pixel indices: its test set averages (13.99, 14.01).
CENTRE = 14
#: A pixel darker than this fraction of the brightest ink (after removing the background) is outside the digit's
#: bounding box, so that faint noise and paper texture do not widen it.
INK_FRACTION = 0.1
#: Ink fainter than this many grey levels (of 255) above the background means there is no digit at all.
MIN_CONTRAST = 32.0
#: Pillow modes that hold more than 8 bits per pixel; their values are rescaled to 0-255 when they exceed 255.
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class PredictInputError(UserError):
    """``data.predict_path`` gave nothing that can be predicted: no files, or none of them readable."""


class InputReadError(ValueError):
    """One input file (or one item of a ``.npy`` file) cannot be used; the message says why."""


class BlankImageError(InputReadError):
    """An image with no ink on it: there is no digit to centre, and any prediction would be meaningless."""


@dataclass
class PredictInputs:
    """Preprocessed inputs, ready for the network, and what was left out.

    Attributes:
        images: N x 28 x 28 uint8, light on dark, as MNIST's.
        names: one per image: the file's path, with ``[i]`` appended for the items of a ``.npy`` stack.
        skipped: (name, reason) for every file or item that could not be used.
    """

    images: np.ndarray
    names: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def find_input_files(spec: str | Path, option: str = "data.predict_path") -> list[Path]:
    """The files ``spec`` names: one file, the files directly inside a folder, or a glob pattern's matches.

    Folders are not searched recursively (a pattern such as ``digits/**/*.png`` is); hidden files are left out.
    Raises :class:`PredictInputError` when nothing is found, so the user learns which of the three went wrong.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not found:
            raise PredictInputError(f"{option} {text}: the folder has no files to predict.")
        return found
    if glob.has_magic(text):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found:
            raise PredictInputError(
                f"{option} {text!r}: the pattern matches no files. Check it, and quote it so that the "
                "shell does not expand it first."
            )
        return found
    raise PredictInputError(f"{option} {text}: no such file or folder. Give an image, a folder or a pattern.")


def to_intensities(values: np.ndarray) -> np.ndarray:
    """Pixel values as float32 grey levels in 0-255: uint8-like 0-255 as is, floats in [0, 1] times 255.

    Anything else (negative, above 255, not finite, not numbers) is refused: such arrays are usually already
    normalized for a network, and guessing their scale would make predictions silently wrong.
    """
    if values.dtype == np.bool_:
        return values.astype(np.float32) * 255.0
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise InputReadError(f"holds {values.dtype} values, not pixel intensities")
    x = values.astype(np.float32)
    if x.size == 0:
        raise InputReadError("is empty")
    if not np.isfinite(x).all():
        raise InputReadError("holds NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 255:
        raise InputReadError(
            f"holds values from {low:g} to {high:g}; expected pixel intensities, 0-255 (or floats in 0-1). "
            "Save the raw image, not one normalized for a network"
        )
    if np.issubdtype(values.dtype, np.floating) and high <= 1.0:
        x *= 255.0
    return x


def read_picture(path: Path) -> np.ndarray:
    """A picture file (anything Pillow reads) as float32 grey levels, H x W, the way a viewer shows it.

    Phone photos are turned upright by their EXIF orientation, and transparent pixels count as white paper, so a
    dark digit drawn on a transparent canvas reads as dark on light. Only the first frame of an animation is read.
    """
    return decode_picture(path)


def read_picture_bytes(data: bytes, max_pixels: int, formats: Sequence[str] | None = None) -> np.ndarray:
    """A picture received as bytes (an upload), read as :func:`read_picture` reads a file.

    A picture of more than ``max_pixels`` pixels is refused from its header, before anything is decoded. The limit
    is this call's own: Pillow's ``Image.MAX_IMAGE_PIXELS`` is one setting for the whole process, and lowering it
    per request would race between threads and change what every other reader in the process accepts.
    ``formats`` (Pillow's names, such as ``"PNG"``) are the only decoders allowed to run, when given.
    """
    return decode_picture(io.BytesIO(data), max_pixels, formats)


def decode_picture(
    source: Path | BinaryIO, max_pixels: int | None = None, formats: Sequence[str] | None = None
) -> np.ndarray:
    """A picture, from a file or a stream, as float32 grey levels (H x W); see :func:`read_picture`."""
    try:
        with Image.open(source, formats=None if formats is None else list(formats)) as opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise InputReadError(
                    f"too large: {width} x {height} pixels, over the limit of {max_pixels:,} (refused before decoding)"
                )
            opened.load()
            img = ImageOps.exif_transpose(opened)
    except InputReadError:
        raise
    except Image.DecompressionBombError as err:
        raise InputReadError(f"too large to read safely ({err})") from err
    except Exception as err:  # Pillow raises many types for a bad file; all mean the same to the user
        if isinstance(err, Image.UnidentifiedImageError):
            if formats is not None:
                raise InputReadError(f"not an image of a supported format ({', '.join(formats)})") from err
            raise InputReadError("not an image Pillow can read (arrays must be named *.npy)") from err
        raise InputReadError(f"not a readable image ({type(err).__name__}: {err})") from err
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if img.mode in WIDE_MODES:
        x = np.asarray(img, dtype=np.float32)
        if x.max(initial=0.0) > 255:
            x = x * (255.0 / 65535.0)
        return to_intensities(np.clip(x, 0, 255))
    return np.asarray(img.convert("L"), dtype=np.float32)


def read_npy(path: Path) -> list[tuple[str, np.ndarray]]:
    """A ``.npy`` array as (name, image) pairs: H x W is one image, N x H x W is N named ``file.npy[i]``."""
    try:
        values = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises ValueError, OSError, EOFError... for a bad file
        raise InputReadError(f"not a readable .npy file ({type(err).__name__}: {err})") from err
    if not isinstance(values, np.ndarray) or values.ndim not in (2, 3):
        shape = getattr(values, "shape", None)
        raise InputReadError(f"holds an array of shape {shape}; expected one image (H x W) or a stack (N x H x W)")
    if values.ndim == 3 and values.shape[-1] in (3, 4) and min(values.shape[:2]) > 4:
        raise InputReadError(
            f"holds an array of shape {values.shape}, which looks like one colour image (H x W x RGB), not a stack "
            "of 3-pixel-wide images; save it as grey levels (H x W), or as a PNG"
        )
    if min(values.shape[-2:]) < 8:
        raise InputReadError(f"holds images of {values.shape[-2]} x {values.shape[-1]} pixels, too small for a digit")
    intensities = to_intensities(values)  # one scale for a whole stack, whatever each item's own range
    if values.ndim == 2:
        return [(str(path), intensities)]
    return [(f"{path}[{i}]", intensities[i]) for i in range(len(intensities))]


def read_input_file(path: Path) -> list[tuple[str, np.ndarray]]:
    """(name, grey levels 0-255) pairs from one file: a ``.npy`` array, or else a picture."""
    if path.suffix.lower() == ".npy":
        return read_npy(path)
    return [(str(path), read_picture(path))]


def border(image: np.ndarray) -> np.ndarray:
    """The pixels of the outermost rows and columns: the background, in any sensible picture of a digit."""
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


def is_dark_on_light(image: np.ndarray) -> bool:
    """Whether the background (the border's median) is nearer the image's brightest than its darkest level."""
    return float(np.median(border(image))) > (float(image.min()) + float(image.max())) / 2


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """The intensity-weighted mean (row, column) of an image with some ink on it."""
    total = image.sum()
    rows = np.arange(image.shape[0], dtype=np.float64)
    cols = np.arange(image.shape[1], dtype=np.float64)
    return float(image.sum(axis=1) @ rows / total), float(image.sum(axis=0) @ cols / total)


def mnist_preprocess(image: np.ndarray, invert: InvertMode = "auto") -> np.ndarray:
    """One picture of a digit (H x W grey levels, 0-255) as MNIST would have it: 28 x 28 uint8, light on dark.

    The steps: invert dark-on-light pictures (``auto`` decides by the border, ``always``/``never`` force it);
    subtract the background level (the border's median) and stretch the ink to reach 255; crop to the ink's
    bounding box; scale it, aspect ratio kept, so its longer side is 20 pixels (Lanczos, antialiased), and stretch
    it again to 255; then paste it into 28 x 28 with its centre of mass at pixel (14, 14), moved only as far as
    keeps all the ink inside.
    An MNIST image comes back almost unchanged: its box is already 20 pixels and its centre already there.

    Raises:
        BlankImageError: the picture has no ink (less than ``MIN_CONTRAST`` grey levels above the background).
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 2 or min(x.shape) < 2:
        raise InputReadError(f"has shape {x.shape}; expected an image of at least 2 x 2 pixels")
    if invert == "always" or (invert == "auto" and is_dark_on_light(x)):
        x = 255.0 - x
    x = np.clip(x - np.median(border(x)), 0.0, None)
    peak = float(x.max())
    if peak < MIN_CONTRAST:
        raise BlankImageError(
            f"is blank: no ink stands out from the background (at most {peak:.0f} grey levels above it); "
            "if the digit is there, set the inversion (predict: data.predict_invert; classify: --invert)"
        )
    x *= 255.0 / peak
    ink = x > INK_FRACTION * 255.0
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = BOX_SIDE / max(crop.shape)
    height, width = (max(1, min(BOX_SIDE, round(side * scale))) for side in crop.shape)
    resized = Image.fromarray(np.ascontiguousarray(crop)).resize((width, height), Image.Resampling.LANCZOS)
    digit = np.asarray(resized, dtype=np.float32)
    digit = np.clip(digit, 0.0, None)  # Lanczos overshoots a little at sharp edges
    digit *= 255.0 / digit.max()  # thin strokes scaled down fade; MNIST's strokes reach 255
    row, col = centre_of_mass(digit)
    top = min(max(round(CENTRE - row), 0), IMAGE_SIDE - height)
    left = min(max(round(CENTRE - col), 0), IMAGE_SIDE - width)
    out = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    out[top : top + height, left : left + width] = digit
    return np.rint(out).astype(np.uint8)


def load_predict_inputs(
    spec: str | Path, invert: InvertMode = "auto", option: str = "data.predict_path"
) -> PredictInputs:
    """Find, read and preprocess every input ``spec`` names; what cannot be used is listed in ``skipped``.

    Raises:
        PredictInputError: nothing was found, or not one input could be used.
    """
    paths = find_input_files(spec, option)
    images: list[np.ndarray] = []
    result = PredictInputs(images=np.zeros((0, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8))
    for path in paths:
        try:
            items = read_input_file(path)
        except InputReadError as err:
            result.skipped.append((str(path), str(err)))
            continue
        for name, values in items:
            try:
                images.append(mnist_preprocess(values, invert))
            except InputReadError as err:
                result.skipped.append((name, str(err)))
                continue
            result.names.append(name)
    if not images:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in result.skipped[:5])
        more = f" (and {len(result.skipped) - 5} more)" if len(result.skipped) > 5 else ""
        raise PredictInputError(
            f"{option} {spec}: none of the {len(result.skipped)} inputs could be predicted. {reasons}{more}."
        )
    result.images = np.stack(images)
    return result
