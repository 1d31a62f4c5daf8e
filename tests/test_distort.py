"""The "digits from elsewhere" distortions: each changes what it says and nothing else (shape, dtype, range, order)."""

from __future__ import annotations

import pytest
import torch

from mnist_lit.data.distort import PROBABILITIES, Distortions, distort
from tests.helpers import synthetic_digits


def strokes(n: int = 12) -> torch.Tensor:
    """``n`` different images, pixels in [0, 1] on a background of 0: the test digits' blobs, noise removed, made
    thicker so that a 2 x 2 erosion leaves some of them."""
    pixels = torch.from_numpy(synthetic_digits(n, seed=0)[0]).float().div(255).unsqueeze(1)
    blobs = torch.where(pixels > 60 / 255, pixels, torch.zeros(()))
    return torch.nn.functional.max_pool2d(blobs, 2, stride=1, padding=1)[..., :28, :28]


def draw(name: str, images: torch.Tensor, seed: int = 0, **options: float) -> torch.Tensor:
    return distort(images, Distortions(**{name: 1.0}, **options), torch.Generator().manual_seed(seed))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().sum((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().sum((1, 2, 3))


@pytest.mark.parametrize("name", PROBABILITIES)
def test_each_distortion_keeps_shape_dtype_range_and_order(name: str) -> None:
    images = strokes()
    out = draw(name, images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, images)
    # each image is still its own (the labels stay with it): its nearest original, by correlation, is itself
    flat_out, flat_in = out.flatten(1), images.flatten(1)
    a = flat_out - flat_out.mean(1, keepdim=True)
    b = flat_in - flat_in.mean(1, keepdim=True)
    if name == "invert":
        a = -a
    correlation = (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T
    assert torch.equal(correlation.argmax(1), torch.arange(len(images)))


def test_all_off_is_the_identity_and_draws_nothing() -> None:
    images = strokes()
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert distort(images, Distortions(), generator) is images
    assert torch.equal(generator.get_state(), state)
    assert Distortions().is_identity and not Distortions(blur=0.1).is_identity


def test_thicker_and_thinner_pens() -> None:
    images = strokes()
    ink = images.sum((1, 2, 3))
    thick, thin = draw("thicker", images), draw("thinner", images)
    assert bool((thick.sum((1, 2, 3)) > 1.3 * ink).all())
    assert bool((thin.sum((1, 2, 3)) < 0.9 * ink).all())
    assert bool((thin.sum((1, 2, 3)) >= 0.5 * ink - 1e-4).all())  # thinner, never erased
    assert bool((thick >= images - 1e-6).all())  # dilation only adds ink


def test_low_resolution_blur_and_jpeg_lose_detail() -> None:
    images = strokes()
    sharp = total_variation(images)
    for name, options in (("low_resolution", {"min_side": 8}), ("blur", {})):
        out = draw(name, images, **options)
        assert bool((total_variation(out) < sharp).all()), name
        torch.testing.assert_close(out.amax((1, 2, 3)), images.amax((1, 2, 3)))  # ink stretched back to its peak
    jpeg = draw("jpeg", images)
    assert float((jpeg - images).abs().max()) > 0.05


def test_low_resolution_reaches_8x8() -> None:
    """At its smallest side, the image holds no more than 8 x 8 independent values (each enlarged bilinearly)."""
    images = torch.from_numpy(synthetic_digits(4, seed=0)[0]).float().div(255).unsqueeze(1)
    out = distort(images, Distortions(low_resolution=1.0, min_side=8), torch.Generator().manual_seed(0))
    for side in range(8, 17):
        small = torch.nn.functional.interpolate(images, size=(side, side), mode="area")
        back = torch.nn.functional.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
        peak = back.amax((1, 2, 3), keepdim=True)
        expected = (back * images.amax((1, 2, 3), keepdim=True) / peak).clamp(0, 1)
        matched = torch.isclose(out, expected, atol=1e-5).flatten(1).all(1)
        if bool(matched.any()):
            break
    else:
        pytest.fail("no image came out as a shrunk-and-enlarged copy of itself")


def test_background_lights_the_paper_and_invert_flips_polarity() -> None:
    images = strokes()
    lit = draw("background", images, max_background=0.3)
    paper = images == 0
    assert float(lit[paper].mean()) > 0.02
    assert float(lit.max()) <= 1.0 and bool((lit >= images).all())  # the ink stays as bright
    torch.testing.assert_close(draw("invert", images), 1.0 - images)


def test_each_image_is_chosen_with_its_probability_and_seeded() -> None:
    images = strokes(400)
    out = distort(images, Distortions(invert=0.25), torch.Generator().manual_seed(3))
    flipped = (out - images).abs().flatten(1).amax(1) > 0
    assert 60 < int(flipped.sum()) < 140  # about 100 of 400
    again = distort(images, Distortions(invert=0.25), torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"blur": 1.5}, "blur"), ({"min_side": 2}, "min_side"), ({"max_background": 0}, "max_background")],
)
def test_settings_out_of_range_are_refused_with_their_name(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Distortions(**options)
