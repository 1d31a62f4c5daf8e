"""Images that are not digits, made offline and reproducibly from a seed, in MNIST's form (28 x 28 uint8, light ink
on black, centred as :func:`~mnist_lit.data.images.mnist_preprocess` centres a user's picture).

They serve two purposes: outlier exposure while training (Hendrycks, Mazeika and Dietterich, ICLR 2019: the network
is taught to spread its probability evenly over the ten digits on them) and an honest measurement of "not a digit"
on whole *families* that training never saw. Each family has a name; :data:`TRAINING_FAMILIES` are the default ones
to train on and :data:`HELD_OUT_FAMILIES` the ones kept for evaluation: other fonts and glyph sets, Gaussian and
uniform noise, and patches of photographs (no glyph at all).

Glyph families draw only characters that are not digits and do not look like one: the letters a digit is commonly
written as (``O o I l i j S s Z z B b g q D``), the digits themselves and thin punctuation that reads as a ``1`` are
never drawn (:data:`DIGIT_LIKE`); :func:`digit_like_letters` makes exactly those, to be reported apart.

Sources, all inside installed packages, nothing downloaded: the DejaVu, STIX and Computer Modern fonts that
matplotlib ships; the Hershey vector fonts of ``hershey-fonts``; the hand-drawn fonts ``font-amatic-sc`` and
``font-intuitive``; scikit-learn's two sample photographs. A family whose package is missing raises
:class:`MissingSourceError`, naming the package to install (``pip install "mnist_lit[robust]"``).

Rendering is hand-written with Pillow: no library makes MNIST-form non-digits, and the few lines that draw a glyph or
a shape large and then hand it to ``mnist_preprocess`` keep the outliers in exactly the form a user's picture gets.
"""

from __future__ import annotations

import string
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_lit.data.idx import IMAGE_SIDE
from mnist_lit.data.images import InputReadError, mnist_preprocess
from mnist_lit.errors import UserError

#: The label an outlier carries in a training batch: no digit (the loss and the metrics leave it out of the digits').
OUTLIER_LABEL = -1

#: Never drawn as a non-digit: the digits, the letters a digit is commonly written as, and thin marks read as a 1.
DIGIT_LIKE = frozenset("0123456789" + "OoIliljSsZzBbgqD" + "|/\\()[]!'`.,:;-_\"")
#: The letters that are written like digits, reported apart by the evaluation (not counted as outliers).
DIGIT_LIKE_LETTERS = "OoIliSsZzBbgqD"
#: Latin letters and symbols that are not digit-like.
LATIN = "".join(c for c in string.ascii_letters if c not in DIGIT_LIKE)
ASCII_SYMBOLS = "".join(c for c in "#%*+<=>?@^{}~" if c not in DIGIT_LIKE)
#: Glyphs of other scripts and of mathematics in the DejaVu fonts, chosen by eye to look like no digit (no omicron,
#: theta, beta, zeta, iota, Cyrillic Ze or Be, which are written like 0, 8, 2, 1, 3 and 6).
UNICODE_SYMBOLS = (
    "αγεηκλμνπρτυφχψωΓΔΛΞΠΣΦΨΩ"  # Greek
    "ЖФЩШЮЯЛПЦЫжфщшюялпцы"  # Cyrillic
    "←→↑↓↔∀∃∈∑∏√∞≈≠≤≥⊂⊃∩∪★☆♠♣♥♦☺✓✗§¶"  # noqa: RUF001  # arrows, mathematics, dingbats
)

CANVAS = 112
MATPLOTLIB_TRAINING_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
)  # fmt: skip
MATPLOTLIB_HELD_OUT_FONTS = ("STIXGeneral.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmss10.ttf", "cmti10.ttf")
#: Hershey's Latin fonts only: its Greek, Cyrillic and symbol fonts put arbitrary glyphs (a bar, a loop) on the
#: ASCII letters, so no list of characters could keep digit-like glyphs out of them.
HERSHEY_TRAINING_FONTS = ("futural", "futuram", "rowmans", "rowmand", "timesr", "timesrb", "scripts", "gothiceng")
HERSHEY_HELD_OUT_FONTS = ("scriptc", "cursive", "timesi", "timesib", "rowmant", "gothicger", "gothicita", "gothgbt")


class MissingSourceError(UserError):
    """A family's fonts or pictures come from a package that is not installed."""


Maker = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class Family:
    """A named kind of non-digit: how to make ``n`` of them, and whether it is kept out of training by default."""

    name: str
    make: Maker
    held_out: bool
    description: str
    #: The characters a glyph family draws (empty for the others): none of them is in :data:`DIGIT_LIKE`.
    chars: str = ""


# --- rendering helpers ---------------------------------------------------------------------------------------------


#: A drawing whose ink spreads less than this across its main direction (the square root of the ratio of the
#: eigenvalues of the ink's covariance) is refused: centred as MNIST, any thin mark (a bar, a slash, a dash) reads as
#: a 1, so strokes and scribbles must spread in both directions.
MIN_SPREAD = 0.4


def ink_spread(image: np.ndarray) -> float:
    """How round the ink is: 1 for a disc or a square, near 0 for a thin straight stroke in any direction."""
    rows, cols = np.nonzero(image > 0.1 * image.max(initial=0.0))
    if len(rows) < 3:
        return 0.0
    low, high = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(np.float64)))
    return float(np.sqrt(max(low, 0.0) / high)) if high > 0 else 0.0


def _centred(canvas: np.ndarray, min_spread: float = 0.0) -> np.ndarray | None:
    """A large drawing, light on black, in MNIST's form (None when nothing visible was drawn, or when its ink spreads
    less than ``min_spread``: see :func:`ink_spread`)."""
    if min_spread and ink_spread(canvas) < min_spread:
        return None
    try:
        return mnist_preprocess(canvas, invert="never")
    except InputReadError:
        return None


def _fill(rng: np.random.Generator, n: int, draw_one: Callable[[np.random.Generator], np.ndarray | None]) -> np.ndarray:
    """``n`` images from ``draw_one``, skipping the draws that came out blank (a glyph a font lacks)."""
    images: list[np.ndarray] = []
    attempts = 0
    while len(images) < n:
        attempts += 1
        if attempts > 20 * n + 100:
            raise RuntimeError("an outlier family keeps drawing blank images; its source is unusable")
        image = draw_one(rng)
        if image is not None:
            images.append(image)
    return np.stack(images) if images else np.zeros((0, IMAGE_SIDE, IMAGE_SIDE), np.uint8)


@cache
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _matplotlib_fonts(names: Sequence[str]) -> list[str]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = [str(folder / name) for name in names if (folder / name).is_file()]
    if not found:
        raise MissingSourceError(f"none of the fonts {', '.join(names)} is in matplotlib's data folder {folder}")
    return found


def _package_fonts(module: str, package: str) -> list[str]:
    try:
        mod = __import__(module)
    except ImportError:
        raise MissingSourceError(
            f"the {module} outlier fonts need the package {package}: pip install {package} "
            '(or pip install "mnist_lit[robust]")'
        ) from None
    return sorted(str(path) for path in mod.font_files.values())


def render_ttf_glyph(font_path: str, char: str, rng: np.random.Generator) -> np.ndarray | None:
    """``char`` from a TrueType font, at a random size and slant of up to 15 degrees, in MNIST's form."""
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    font = _truetype(font_path, int(rng.integers(56, 84)))
    ImageDraw.Draw(canvas).text((CANVAS / 2, CANVAS / 2), char, fill=255, font=font, anchor="mm")
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
    return _centred(np.asarray(canvas, dtype=np.float32))


@cache
def _hershey(font: str) -> Any:
    try:
        from HersheyFonts import HersheyFonts
    except ImportError:
        raise MissingSourceError(
            "the Hershey outlier fonts need the package hershey-fonts: pip install hershey-fonts "
            '(or pip install "mnist_lit[robust]")'
        ) from None
    hershey = HersheyFonts()
    hershey.load_default_font(font)
    hershey.normalize_rendering(CANVAS * 0.6)
    return hershey


def render_hershey_glyph(font: str, char: str, rng: np.random.Generator) -> np.ndarray | None:
    """``char`` of a Hershey vector font, drawn as pen strokes of a random width, in MNIST's form."""
    lines = list(_hershey(font).lines_for_text(char))
    if not lines:
        return None
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    width = int(rng.integers(5, 11))
    for (x0, y0), (x1, y1) in lines:  # y grows upwards in Hershey's coordinates
        a, b = (x0 + CANVAS * 0.2, CANVAS * 0.8 - y0), (x1 + CANVAS * 0.2, CANVAS * 0.8 - y1)
        draw.line([a, b], fill=255, width=width)
        for x, y in (a, b):  # round pen
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
    return _centred(np.asarray(canvas, dtype=np.float32))


def glyph_maker(fonts: Callable[[], list[str]], chars: str, hershey: bool = False) -> Maker:
    """A family drawing random characters of ``chars`` (none of them digit-like) from random fonts of ``fonts()``."""
    bad = DIGIT_LIKE.intersection(chars)
    if bad:
        raise ValueError(f"digit-like characters {''.join(sorted(bad))} cannot be outliers")
    return _glyphs(fonts, chars, hershey)


def _glyphs(fonts: Callable[[], list[str]], chars: str, hershey: bool) -> Maker:
    def make(rng: np.random.Generator, n: int) -> np.ndarray:
        names = fonts()
        render = render_hershey_glyph if hershey else render_ttf_glyph
        return _fill(rng, n, lambda r: render(names[r.integers(len(names))], chars[r.integers(len(chars))], r))

    return make


def digit_like_letters(rng: np.random.Generator, n: int) -> np.ndarray:
    """The letters that are written like digits (O, l, S, Z, B, g, q...), from every font family: not outliers,
    reported apart by the evaluation, since no detector should be asked to call an O "not a digit"."""
    fonts = _matplotlib_fonts(MATPLOTLIB_TRAINING_FONTS + MATPLOTLIB_HELD_OUT_FONTS)
    chars = DIGIT_LIKE_LETTERS
    return _fill(rng, n, lambda r: render_ttf_glyph(fonts[r.integers(len(fonts))], chars[r.integers(len(chars))], r))


def font_digits(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` digits (images n x 28 x 28 uint8, labels n) in the fonts the training glyph families draw from: half in
    the DejaVu fonts, half in the 8 training Hershey fonts, each digit equally often, drawn as the letters are.

    Not outliers: the positives that go with them. A network taught that these fonts' letters are not digits,
    and shown no digit in them, learns that a clean, even stroke is itself the mark of a non-digit, and calls
    printed or neatly drawn digits "not a digit" (see :class:`OutlierExposure`'s ``font_digits``)."""
    ttf = _matplotlib_fonts(MATPLOTLIB_TRAINING_FONTS)
    images: list[np.ndarray] = []
    labels = np.arange(n, dtype=np.int64) % 10
    for index, digit in enumerate(labels):
        for _ in range(20):
            if index % 2:
                image = render_hershey_glyph(HERSHEY_TRAINING_FONTS[rng.integers(len(HERSHEY_TRAINING_FONTS))],
                                             str(digit), rng)  # fmt: skip
            else:
                image = render_ttf_glyph(ttf[rng.integers(len(ttf))], str(digit), rng)
            if image is not None:
                break
        else:
            raise RuntimeError(f"the training fonts keep drawing the digit {digit} blank")
        images.append(image)
    return (np.stack(images) if images else np.zeros((0, IMAGE_SIDE, IMAGE_SIDE), np.uint8)), labels


# --- drawn families ------------------------------------------------------------------------------------------------


def _points(rng: np.random.Generator, k: int, low: float = 0.1, high: float = 0.9) -> list[tuple[float, float]]:
    return [tuple(p) for p in rng.uniform(low * CANVAS, high * CANVAS, (k, 2))]


def strokes(rng: np.random.Generator, n: int) -> np.ndarray:
    """One to three thick straight lines or arcs, at random (a cross, a wedge, a tick, an arc)."""

    def one(r: np.random.Generator) -> np.ndarray | None:
        canvas = Image.new("L", (CANVAS, CANVAS), 0)
        draw = ImageDraw.Draw(canvas)
        width = int(r.integers(7, 13))
        count = int(r.integers(2, 4))
        for _ in range(count):
            if r.random() < 0.6:
                draw.line(_points(r, 2), fill=255, width=width)
            else:
                x0, y0 = r.uniform(0.05, 0.5, 2) * CANVAS
                side = r.uniform(0.3, 0.5, 2) * CANVAS
                start = float(r.uniform(0, 360))
                draw.arc((x0, y0, x0 + side[0], y0 + side[1]), start, start + float(r.uniform(60, 200)), 255, width)
        return _centred(np.asarray(canvas, dtype=np.float32), MIN_SPREAD)

    return _fill(rng, n, one)


def scribbles(rng: np.random.Generator, n: int) -> np.ndarray:
    """A pen wandering at random: a smooth random walk of 12 to 24 steps, as a child's scrawl or a crossed-out mark."""

    def one(r: np.random.Generator) -> np.ndarray | None:
        canvas = Image.new("L", (CANVAS, CANVAS), 0)
        steps = int(r.integers(12, 25))
        heading = r.uniform(0, 2 * np.pi)
        turns = np.cumsum(r.normal(0, 0.9, steps))
        lengths = r.uniform(0.08, 0.2, steps) * CANVAS
        xy = np.cumsum(np.stack([np.cos(heading + turns), np.sin(heading + turns)], 1) * lengths[:, None], 0)
        xy -= xy.mean(0) - CANVAS / 2
        ImageDraw.Draw(canvas).line([tuple(p) for p in xy], fill=255, width=int(r.integers(6, 12)), joint="curve")
        return _centred(np.asarray(canvas, dtype=np.float32), MIN_SPREAD)

    return _fill(rng, n, one)


def shapes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Filled or outlined triangles, squares and stars, filled polygons of 5 to 8 sides and filled discs: an
    outlined ring is a 0, and so is the outline of a polygon with that many sides (a network taught otherwise calls
    neatly drawn zeros "not a digit"), so neither is drawn."""

    def one(r: np.random.Generator) -> np.ndarray | None:
        canvas = Image.new("L", (CANVAS, CANVAS), 0)
        draw = ImageDraw.Draw(canvas)
        kind = r.integers(5)
        centre, radius = CANVAS / 2, float(r.uniform(0.25, 0.42) * CANVAS)
        filled = bool(r.random() < 0.5) or kind in (2, 4)  # kind 2: 5 to 8 sides, outlined like a 0
        if kind == 4:  # filled disc or ellipse
            rx, ry = radius, radius * float(r.uniform(0.5, 1.0))
            draw.ellipse((centre - rx, centre - ry, centre + rx, centre + ry), fill=255)
        else:
            sides = (3, 4, int(r.integers(5, 9)), 5)[kind]
            angles = float(r.uniform(0, 2 * np.pi)) + np.arange(2 * sides if kind == 3 else sides) * np.pi / (
                sides if kind == 3 else sides / 2
            )
            radii = np.where(np.arange(len(angles)) % 2, radius * 0.45, radius) if kind == 3 else np.full(sides, radius)
            polygon = [(centre + rr * np.cos(a), centre + rr * np.sin(a)) for rr, a in zip(radii, angles, strict=True)]
            if filled:
                draw.polygon(polygon, fill=255)
            else:
                draw.polygon(polygon, outline=255, width=int(r.integers(7, 12)))
        return _centred(np.asarray(canvas, dtype=np.float32))

    return _fill(rng, n, one)


def specks(rng: np.random.Generator, n: int) -> np.ndarray:
    """A blank image with two to eight small specks (dust on a scan), left where they fall."""
    images = np.zeros((n, IMAGE_SIDE, IMAGE_SIDE), np.uint8)
    for image in images:
        for _ in range(rng.integers(2, 9)):
            y, x = rng.integers(0, IMAGE_SIDE - 2, 2)
            image[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = rng.integers(96, 256)
    return images


def smooth_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Blotches: white noise at 4 x 4 to 7 x 7, smoothly upsampled, sometimes cut to blobs by a threshold."""
    images = []
    for _ in range(n):
        side = int(rng.integers(4, 8))
        small = Image.fromarray((rng.random((side, side)) * 255).astype(np.uint8))
        x = np.asarray(small.resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BICUBIC), dtype=np.float32)
        if rng.random() < 0.5:
            x = np.where(x > np.quantile(x, rng.uniform(0.6, 0.85)), 255.0, 0.0)
        images.append(np.clip(x, 0, 255).astype(np.uint8))
    return np.stack(images)


def uniform_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Every pixel uniform in 0-255."""
    return rng.integers(0, 256, (n, IMAGE_SIDE, IMAGE_SIDE)).astype(np.uint8)


def gaussian_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Every pixel Gaussian around mid-grey (mean 0.5, sd 0.25, of 255), clipped to the pixel range."""
    return np.clip(rng.normal(127.5, 64.0, (n, IMAGE_SIDE, IMAGE_SIDE)), 0, 255).astype(np.uint8)


@cache
def _photographs() -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise MissingSourceError(
            "the photo_patches family needs scikit-learn's sample photographs: pip install scikit-learn"
        ) from None
    return tuple(np.asarray(Image.fromarray(im).convert("L"), dtype=np.float32) for im in load_sample_images().images)


def photo_patches(rng: np.random.Generator, n: int) -> np.ndarray:
    """Square crops (40 to 200 pixels) of scikit-learn's two sample photographs (a temple, a flower), greyed and
    shrunk to 28 x 28, either polarity: pictures that are no glyph at all."""
    photos = _photographs()
    images = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(40, 201))
        y, x = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        crop = Image.fromarray(photo[y : y + side, x : x + side].astype(np.uint8))
        patch = np.asarray(crop.resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.LANCZOS), dtype=np.uint8)
        images.append(255 - patch if rng.random() < 0.5 else patch)
    return np.stack(images)


# --- families made from digits -------------------------------------------------------------------------------------

#: Digits whose 90- or 270-degree turn is still read as a digit (a 0 stays a 0, an 8 becomes an infinity sign
#: close to a fallen 8): never turned.
NOT_TURNED = frozenset({0, 8})
#: Which half of which digit is kept by :func:`digit_halves`: a half that reads as a digit (the loop of a 6 or 9,
#: the stick of a 1 or 4) is never made.
HALVES = {2: ("top", "bottom"), 3: ("top", "bottom"), 5: ("top", "bottom"), 4: ("top",), 7: ("bottom",)}


def rotated_digits(rng: np.random.Generator, n: int, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Digits turned by 90 or 270 degrees (Hendrycks and Gimpel's home-made outliers), none of 0 or 8."""
    pool = np.flatnonzero(~np.isin(labels, list(NOT_TURNED)))
    chosen = images[rng.choice(pool, n)]
    turns = rng.choice([1, 3], n)
    return np.stack([np.rot90(image, k) for image, k in zip(chosen, turns, strict=True)]).copy()


def digit_halves(rng: np.random.Generator, n: int, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One half of a digit, top or bottom, the other half blank: a digit cut in half (only halves in
    :data:`HALVES`, which read as no digit)."""
    pool = np.flatnonzero(np.isin(labels, list(HALVES)))
    out = np.zeros((n, IMAGE_SIDE, IMAGE_SIDE), np.uint8)
    for i, index in enumerate(rng.choice(pool, n)):
        half = HALVES[int(labels[index])][rng.integers(len(HALVES[int(labels[index])]))]
        rows = np.flatnonzero(images[index].any(axis=1))
        middle = (rows[0] + rows[-1] + 1) // 2
        keep = slice(0, middle) if half == "top" else slice(middle, IMAGE_SIDE)
        out[i, keep] = images[index, keep]
    return out


def overlapped_digits(rng: np.random.Generator, n: int, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Two digits of different classes drawn over each other, the second shifted by up to 4 pixels."""
    out = np.zeros((n, IMAGE_SIDE, IMAGE_SIDE), np.uint8)
    for i in range(n):
        a = rng.integers(len(images))
        others = np.flatnonzero(labels != labels[a])
        b = others[rng.integers(len(others))]
        dy, dx = rng.integers(-4, 5, 2)
        shifted = np.roll(images[b], (dy, dx), axis=(0, 1))
        out[i] = np.maximum(images[a], shifted)
    return out


DIGIT_FAMILIES: dict[str, Callable[[np.random.Generator, int, np.ndarray, np.ndarray], np.ndarray]] = {
    "digits_rotated": rotated_digits,
    "digits_halved": digit_halves,
    "digits_overlapped": overlapped_digits,
}


def _hershey_fonts(names: Sequence[str]) -> Callable[[], list[str]]:
    return lambda: list(names)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("dejavu_letters", glyph_maker(lambda: _matplotlib_fonts(MATPLOTLIB_TRAINING_FONTS), LATIN), False,
               "Latin letters (not digit-like) in the DejaVu fonts matplotlib ships", LATIN),
        Family("dejavu_symbols", glyph_maker(lambda: _matplotlib_fonts(MATPLOTLIB_TRAINING_FONTS),
                                             UNICODE_SYMBOLS + ASCII_SYMBOLS), False,
               "Greek, Cyrillic, arrows, mathematics and dingbats in DejaVu", UNICODE_SYMBOLS + ASCII_SYMBOLS),
        Family("hershey", glyph_maker(_hershey_fonts(HERSHEY_TRAINING_FONTS), LATIN + ASCII_SYMBOLS, hershey=True),
               False, "glyphs of 8 Hershey vector fonts (sans, roman, script, gothic), drawn as pen strokes",
               LATIN + ASCII_SYMBOLS),
        Family("strokes", strokes, False, "two or three thick lines or arcs"),
        Family("scribbles", scribbles, False, "a smooth random walk of the pen"),
        Family("shapes", shapes, False, "filled and outlined polygons and stars, filled discs"),
        Family("specks", specks, False, "blank with a few specks"),
        Family("blotches", smooth_noise, False, "low-frequency noise, sometimes thresholded to blobs"),
        Family("stix_cm_letters", glyph_maker(lambda: _matplotlib_fonts(MATPLOTLIB_HELD_OUT_FONTS),
                                              LATIN + ASCII_SYMBOLS), True,
               "Latin letters and symbols in the STIX and Computer Modern fonts of matplotlib", LATIN + ASCII_SYMBOLS),
        Family("hershey_held_out", glyph_maker(_hershey_fonts(HERSHEY_HELD_OUT_FONTS), LATIN + ASCII_SYMBOLS,
                                               hershey=True), True,
               "8 other Hershey fonts: complex script, cursive, italic, triplex, German and Italian gothic",
               LATIN + ASCII_SYMBOLS),
        Family("handwritten_fonts", glyph_maker(lambda: _package_fonts("font_amatic_sc", "font-amatic-sc")
                                                + _package_fonts("font_intuitive", "font-intuitive"), LATIN), True,
               "letters in two hand-drawn fonts, Amatic SC and Intuitive", LATIN),
        Family("uniform_noise", uniform_noise, True, "every pixel uniform in 0-255"),
        Family("gaussian_noise", gaussian_noise, True, "every pixel Gaussian, mean 127.5, sd 64"),
        Family("photo_patches", photo_patches, True, "crops of scikit-learn's sample photographs, shrunk to 28 x 28"),
    )
}  # fmt: skip

TRAINING_FAMILIES = tuple(name for name, family in FAMILIES.items() if not family.held_out) + tuple(DIGIT_FAMILIES)
HELD_OUT_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.held_out)
ALL_FAMILIES = tuple(FAMILIES) + tuple(DIGIT_FAMILIES)


def family_rng(seed: int, family: str) -> np.random.Generator:
    """The generator of one family: the seed and the family's name alone decide its images, so adding or removing
    another family changes none of them."""
    return np.random.default_rng(np.random.SeedSequence([seed % 2**32, zlib.crc32(family.encode())]))


def generate(family: str, n: int, seed: int = 0, digits: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``n`` images (n x 28 x 28 uint8) of ``family``; the same ``seed`` gives the same images.

    The families made from digits (``digits_rotated``, ``digits_halved``, ``digits_overlapped``) need ``digits``:
    (images N x 28 x 28 uint8, labels N), e.g. the training split.
    """
    if family in DIGIT_FAMILIES:
        if digits is None:
            raise ValueError(f"outlier family {family} is made from digits: pass digits=(images, labels)")
        images, labels = (np.asarray(a) for a in digits)
        return DIGIT_FAMILIES[family](family_rng(seed, family), n, images, labels)
    if family not in FAMILIES:
        raise ValueError(f"unknown outlier family {family!r}; choose from {', '.join(ALL_FAMILIES)}")
    return FAMILIES[family].make(family_rng(seed, family), n)


def outlier_pool(
    families: Sequence[str], per_family: int, seed: int = 0, digits: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``per_family`` images of each family, stacked: (images M x 28 x 28 uint8, family index M into ``families``)."""
    images = [generate(name, per_family, seed, digits) for name in families]
    index = np.repeat(np.arange(len(families)), per_family)
    return np.concatenate(images), index


@dataclass(frozen=True)
class OutlierExposure:
    """Non-digits mixed into every training batch (``data.outliers``), which the loss teaches the network to answer
    with equal probabilities for all ten digits (see ``MNISTClassifier``'s ``outlier_weight``).

    Args:
        families: the families to train on (default: :data:`TRAINING_FAMILIES`; never the held-out ones, which
            measure what training never saw).
        per_batch: outliers added to each training batch (of ``data.batch_size`` digits).
        per_family: images made of each family, once, when the data is set up; each batch draws from them, and the
            batch's random transforms (``data.augment``, ``data.distort``) apply to them as to the digits.
        seed: the seed of the images (the draws per batch follow ``data.seed``, as the digits' transforms do).
        font_digits: digits in the glyph families' own fonts (:func:`font_digits`), labelled, added to each batch
            besides the outliers (0: none); ``per_family`` of them are made. Without them a network learns the
            fonts' even strokes as the mark of a non-digit, and calls neatly drawn digits "not a digit".
    """

    families: tuple[str, ...] = TRAINING_FAMILIES
    per_batch: int = 16
    per_family: int = 1000
    seed: int = 0
    font_digits: int = 0

    def __post_init__(self) -> None:
        """Check the names and counts, and keep plain values (checkpoints are read weights-only)."""
        families = tuple(str(name) for name in self.families)
        unknown = [name for name in families if name not in ALL_FAMILIES]
        if unknown or not families:
            raise ValueError(
                f"data.outliers.families: unknown {', '.join(map(repr, unknown)) or 'none given'}; "
                f"choose from {', '.join(ALL_FAMILIES)}"
            )
        if int(self.per_batch) < 1 or int(self.per_family) < 1:
            raise ValueError("data.outliers: per_batch and per_family must be at least 1")
        if int(self.font_digits) < 0:
            raise ValueError(f"data.outliers.font_digits: {self.font_digits} digits per batch; give 0 or more")
        object.__setattr__(self, "families", families)
        object.__setattr__(self, "per_batch", int(self.per_batch))
        object.__setattr__(self, "per_family", int(self.per_family))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "font_digits", int(self.font_digits))
