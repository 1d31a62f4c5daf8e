"""Non-digits made offline from a seed, and outlier exposure: the data option, the loss, and what it buys."""

from __future__ import annotations

import json
import logging

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnist_lit.data import outliers
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.outliers import (
    ALL_FAMILIES,
    DIGIT_LIKE,
    FAMILIES,
    HELD_OUT_FAMILIES,
    OUTLIER_LABEL,
    TRAINING_FAMILIES,
    OutlierExposure,
    generate,
    glyph_maker,
)
from mnist_lit.models import CompactCNN, FastCNN
from mnist_lit.models.base import uniform_cross_entropy
from tests.helpers import CONFIGS, TinyMNIST, quick_trainer, runs, synthetic_digits

DIGITS = synthetic_digits(200, seed=0)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_each_family_is_seeded_and_in_mnist_form(family: str) -> None:
    first = generate(family, 6, seed=0, digits=DIGITS)
    assert first.shape == (6, 28, 28) and first.dtype == np.uint8
    assert np.array_equal(first, generate(family, 6, seed=0, digits=DIGITS))  # same seed, same images
    assert not np.array_equal(first, generate(family, 6, seed=1, digits=DIGITS))
    assert all(image.max() > 0 for image in first)


@pytest.mark.parametrize("family", ["dejavu_letters", "hershey", "strokes", "shapes", "handwritten_fonts"])
def test_drawn_families_are_centred_as_mnist_is(family: str) -> None:
    for image in generate(family, 4, seed=0).astype(np.float64):
        rows, cols = np.arange(28) @ image.sum(1) / image.sum(), np.arange(28) @ image.sum(0) / image.sum()
        assert abs(rows - 14) <= 1.5 and abs(cols - 14) <= 1.5
        assert image.max() == 255
        ink = np.flatnonzero(image.max(0) > 25), np.flatnonzero(image.max(1) > 25)
        assert max(ink[0][-1] - ink[0][0], ink[1][-1] - ink[1][0]) + 1 <= 21  # MNIST's 20-pixel box


def test_a_family_does_not_change_when_another_is_added() -> None:
    images, index = outliers.outlier_pool(("shapes", "specks"), 3, seed=0)
    alone, _ = outliers.outlier_pool(("specks",), 3, seed=0)
    assert np.array_equal(images[index == 1], alone) and index.tolist() == [0, 0, 0, 1, 1, 1]


def test_no_glyph_family_ever_draws_a_digit_like_character(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[str] = []

    def record(font: str, char: str, rng: np.random.Generator) -> np.ndarray:
        drawn.append(char)
        return np.full((28, 28), 255, np.uint8)

    monkeypatch.setattr(outliers, "render_ttf_glyph", record)
    monkeypatch.setattr(outliers, "render_hershey_glyph", record)
    glyph_families = [name for name, family in FAMILIES.items() if family.chars]
    assert len(glyph_families) == 6
    for name in glyph_families:
        generate(name, 300, seed=0)
        assert not DIGIT_LIKE.intersection(FAMILIES[name].chars)
    assert len(drawn) == 1800 and not DIGIT_LIKE.intersection(drawn)
    assert set("OoIlSsZzBbgqD0123456789") <= DIGIT_LIKE
    with pytest.raises(ValueError, match="digit-like characters O"):
        glyph_maker(lambda: [], "AO")


def test_training_and_held_out_families_do_not_overlap() -> None:
    assert not set(TRAINING_FAMILIES) & set(HELD_OUT_FAMILIES)
    assert {"uniform_noise", "gaussian_noise", "photo_patches"} <= set(HELD_OUT_FAMILIES)
    held_out_fonts = set(outliers.HERSHEY_HELD_OUT_FONTS) | set(outliers.MATPLOTLIB_HELD_OUT_FONTS)
    assert not held_out_fonts & (set(outliers.HERSHEY_TRAINING_FONTS) | set(outliers.MATPLOTLIB_TRAINING_FONTS))


def test_unknown_families_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown 'letters'.*choose from dejavu_letters"):
        OutlierExposure(families=("letters",))
    with pytest.raises(ValueError, match="unknown outlier family 'nope'"):
        generate("nope", 1)
    with pytest.raises(ValueError, match="made from digits"):
        generate("digits_rotated", 1)


def test_digit_families_never_use_digits_that_stay_digits() -> None:
    images, labels = DIGITS
    rng = np.random.default_rng(0)
    used = labels[rng.choice(np.flatnonzero(~np.isin(labels, [0, 8])), 50)]
    assert not np.isin(used, [0, 8]).any()
    turned = generate("digits_rotated", 20, seed=0, digits=(images, labels))
    originals = {image.tobytes() for image, label in zip(images, labels, strict=True) if label not in (0, 8)}
    assert all(
        np.rot90(image, 1).tobytes() in originals or np.rot90(image, 3).tobytes() in originals for image in turned
    )
    halves = generate("digits_halved", 20, seed=0, digits=(images, labels))
    assert all(image[:14].any() != image[14:].any() or not image[:14].any() for image in halves)


def exposed_datamodule(tiny: TinyMNIST, **outlier_options: object) -> MNISTDataModule:
    options = {"families": ("shapes", "specks"), "per_batch": 8, "per_family": 20, **outlier_options}
    dm = MNISTDataModule(
        data_dir=tiny.data_dir, batch_size=32, val_split="test", download=False, outliers=OutlierExposure(**options)
    )
    dm.setup("fit")
    return dm


def test_training_batches_carry_outliers_labelled_minus_one(tiny_mnist: TinyMNIST) -> None:
    dm = exposed_datamodule(tiny_mnist)
    assert dm.outlier_images is None  # made for training only
    loader = dm.train_dataloader()
    assert dm.outlier_images is not None and dm.outlier_images.shape == (40, 28, 28)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    dm.trainer = trainer
    trainer.state.stage = "train"  # trainer.training
    images, labels = dm.on_after_batch_transfer(next(iter(loader)), 0)
    assert images.shape == (40, 1, 28, 28) and images.dtype == torch.float32
    assert labels[:32].min() >= 0 and (labels[32:] == OUTLIER_LABEL).all()
    pool = {image.tobytes() for image in dm.outlier_images.numpy()}
    assert all(image.tobytes() in pool for image in (images[32:, 0] * 255).round().byte().numpy())
    trainer.state.stage = "validate"
    val_images, val_labels = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert (val_labels >= 0).all() and len(val_images) == len(val_labels)
    # saved as plain values, as a checkpoint read weights-only and a JSON report hold them
    assert dm.hparams.outliers == {
        "families": ["shapes", "specks"], "per_batch": 8, "per_family": 20, "seed": 0, "font_digits": 0
    }  # fmt: skip
    assert MNISTDataModule(outliers=dm.hparams.outliers).outliers == dm.outliers


def test_font_digits_are_seeded_balanced_and_in_mnist_form() -> None:
    images, labels = outliers.font_digits(outliers.family_rng(0, "font_digits"), 30)
    again, _ = outliers.font_digits(outliers.family_rng(0, "font_digits"), 30)
    other, _ = outliers.font_digits(outliers.family_rng(1, "font_digits"), 30)
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8 and (images.max(axis=(1, 2)) > 0).all()
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert np.bincount(labels, minlength=10).tolist() == [3] * 10


def test_font_digits_join_training_batches_with_their_labels(tiny_mnist: TinyMNIST) -> None:
    dm = exposed_datamodule(tiny_mnist, font_digits=4)
    loader = dm.train_dataloader()
    assert dm.font_digit_pool is not None and dm.font_digit_pool[0].shape == (20, 28, 28)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    dm.trainer = trainer
    trainer.state.stage = "train"
    images, labels = dm.on_after_batch_transfer(next(iter(loader)), 0)
    assert images.shape == (44, 1, 28, 28) and (labels[32:40] == OUTLIER_LABEL).all()
    pool = {image.tobytes(): int(label) for image, label in zip(*(t.numpy() for t in dm.font_digit_pool), strict=True)}
    drawn = (images[40:, 0] * 255).round().byte().numpy()
    assert [pool[image.tobytes()] for image in drawn] == labels[40:].tolist()
    with pytest.raises(ValueError, match="font_digits"):
        OutlierExposure(font_digits=-1)


def test_the_loss_adds_uniform_cross_entropy_on_outliers_and_is_unchanged_without_them() -> None:
    torch.manual_seed(0)
    model = CompactCNN().eval()
    x, labels = torch.rand(6, 1, 28, 28), torch.tensor([0, 3, 9, 1, 1, 7])
    logits = model(x)
    plain = model.training_step((x, labels), 0)["loss"]
    torch.testing.assert_close(plain, F.cross_entropy(logits, labels), rtol=0, atol=0)
    mixed = torch.tensor([0, 3, OUTLIER_LABEL, 1, OUTLIER_LABEL, 7])
    loss = model.training_step((x, mixed), 0)["loss"]
    uniform = torch.full((2, 10), 0.1)
    expected = F.cross_entropy(logits[[0, 1, 3, 5]], mixed[[0, 1, 3, 5]]) + 0.5 * F.cross_entropy(
        logits[[2, 4]], uniform
    )
    torch.testing.assert_close(loss, expected)
    assert float(uniform_cross_entropy(logits, mixed < 0).detach()) >= np.log(10)  # at least the uniform softmax's
    assert float(uniform_cross_entropy(logits, torch.zeros(6, dtype=torch.bool)).detach()) == 0.0


def test_training_accuracy_counts_digits_only() -> None:
    model = CompactCNN().eval()
    x = torch.rand(4, 1, 28, 28)
    predicted = model(x).argmax(1)
    labels = torch.stack([predicted[0], predicted[1], torch.tensor(OUTLIER_LABEL), torch.tensor(OUTLIER_LABEL)])
    model.training_step((x, labels), 0)
    assert float(model.accuracy["train_acc"].compute()) == 1.0


def top_probabilities(model: torch.nn.Module, dm: MNISTDataModule, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    pixels = images if isinstance(images, torch.Tensor) else torch.from_numpy(images)
    with torch.no_grad():
        return model(dm.normalize(pixels.unsqueeze(1))).softmax(1).amax(1)


def test_a_tiny_outlier_exposed_network_flags_noise_and_shapes_more_than_a_plain_one(tiny_mnist: TinyMNIST) -> None:
    """The same network, seed and digits, with and without outlier exposure (shapes, blotches, strokes): exposed, it
    answers new shapes and uniform noise (a family it never saw) with nearly uniform probabilities, far less sure than
    the plain network, and is as sure and as right on the digits."""
    families = ("shapes", "blotches", "strokes")
    shapes, noise = generate("shapes", 100, seed=7), generate("uniform_noise", 100, seed=7)
    top = {}
    for exposed in (False, True):
        pl.seed_everything(0, verbose=False)
        dm = MNISTDataModule(
            data_dir=tiny_mnist.data_dir, batch_size=32, val_split="test", download=False,
            outliers=OutlierExposure(families=families, per_batch=16, per_family=60) if exposed else None,
        )  # fmt: skip
        trainer = quick_trainer(max_epochs=10)
        model = FastCNN()
        trainer.fit(model, datamodule=dm)
        model.eval()
        (test,) = trainer.test(model, datamodule=dm, verbose=False)
        assert test["test/acc"] >= 0.9
        top[exposed] = [float(top_probabilities(model, dm, x).mean()) for x in (dm.data_test.images, shapes, noise)]
    (plain_digits, plain_shapes, plain_noise), (digits, exposed_shapes, exposed_noise) = top[False], top[True]
    assert digits >= 0.95 and plain_digits >= 0.95
    assert exposed_shapes <= 0.25 and exposed_shapes <= plain_shapes - 0.2  # measured: 0.14 against 0.45
    assert exposed_noise <= 0.25 and exposed_noise <= plain_noise - 0.05  # measured: 0.18 against 0.30


def test_the_test_reports_not_a_digit_on_held_out_families(tiny_mnist: TinyMNIST, tmp_path) -> None:
    """``OODReport`` + ``MetricsReport``: metrics.json's ``ood`` has each held-out family's AUROC and FPR at 95% TPR
    for each score, the digit-like letters apart, and the ROC figure is in the run's figures."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from mnist_lit.callbacks import MetricsReport, OODReport

    pl.seed_everything(0, verbose=False)
    dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, batch_size=32, val_split="test", download=False)
    logger = TensorBoardLogger(tmp_path / "logs", name="ood", version=0)
    trainer = quick_trainer(max_epochs=1, logger=logger, callbacks=[OODReport(per_family=12), MetricsReport()])
    model = FastCNN()
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    report = json.loads((tmp_path / "logs" / "ood" / "version_0" / "metrics.json").read_text())["ood"]
    assert set(report["families"]) == {*HELD_OUT_FAMILIES, "digit_like_letters"}
    assert report["scores"] == ["max_softmax", "energy"] and report["digits"] == tiny_mnist.n_test
    for family in report["families"].values():
        for score in ("max_softmax", "energy"):
            assert 0.0 <= family[score]["auroc"] <= 1.0 and 0.0 <= family[score]["fpr_at_95_tpr"] <= 1.0
            assert family[score]["others"] == 12
    assert report["all_held_out"]["energy"]["others"] == 12 * len(HELD_OUT_FAMILIES)  # digit-like letters apart
    assert report["fitted"] == {"method": "max_softmax", "threshold": None}
    assert (tmp_path / "logs" / "ood" / "version_0" / "figures" / "ood_roc.png").is_file()


def test_shapes_never_outline_a_polygon_that_a_zero_could_be(monkeypatch: pytest.MonkeyPatch) -> None:
    outlined: list[int] = []
    polygon = outliers.ImageDraw.ImageDraw.polygon

    def recording(self: object, xy: list, fill: int | None = None, *args: object, **kwargs: object) -> None:
        if fill is None:
            outlined.append(len(xy))
        polygon(self, xy, fill, *args, **kwargs)

    monkeypatch.setattr(outliers.ImageDraw.ImageDraw, "polygon", recording)
    generate("shapes", 200, seed=0)
    assert outlined and set(outlined) <= {3, 4, 10}  # triangles, squares and stars only


def test_robust_config_trains_exposed_and_fits_its_threshold_on_transformed_digits(
    tiny_mnist: TinyMNIST, caplog: pytest.LogCaptureFixture
) -> None:
    from mnist_lit.cli import main

    caplog.set_level(logging.INFO)
    main(["fit", "--config", str(CONFIGS / "robust.yaml"), "--trainer.max_epochs", "1", "--trainer.enable_progress_bar",
          "false", "--data.val_fraction", "0.25", "--data.outliers.per_family", "20",
          "--model.init_args.filters", "[8, 16, 32]"])  # fmt: skip
    run = runs("robust")[-1]
    report = json.loads((run / "metrics.json").read_text())
    assert report["ood"]["fitted"]["method"] == "energy" and report["ood"]["fitted"]["threshold"] is not None
    assert report["config"]["data"]["outliers"]["font_digits"] == 8
    assert (run / "checkpoints" / "calibrated.ckpt").exists() and (run / "figures" / "ood_roc.png").exists()
    assert "8 font digits per batch" in caplog.text and "keeps 99.0% of the 200 transformed validation" in caplog.text
