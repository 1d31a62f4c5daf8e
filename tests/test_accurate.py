"""The network built for accuracy, its schedule and label smoothing, and the data module's random augmentation."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from mnist_lit.callbacks import ReportFigures
from mnist_lit.cli import main
from mnist_lit.data.augment import Augmentation, apply_affine, random_affine, random_affine_matrices
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.datasets import EpochShuffleSampler
from mnist_lit.models import AccurateCNN, CompactCNN
from mnist_lit.training.checkpoints import read_checkpoint
from tests.helpers import CONFIGS, TinyMNIST, exit_code, runs

DEOTTE = Augmentation(rotation=15, zoom=0.15, shift=0.1)


# The network.


def test_accurate_cnn_has_deottes_layers_and_parameter_count() -> None:
    model = AccurateCNN()
    per_layer = [sum(p.numel() for p in m.parameters()) for m in model.net if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert per_layer == [320, 9_248, 25_632, 18_496, 36_928, 102_464, 131_200, 1_290]
    assert sum(p.numel() for p in model.parameters()) == 326_410
    running = sum(b.numel() for name, b in model.named_buffers() if "running" in name)
    assert running == 832  # Keras' "non-trainable" parameters: 327,242 in all
    assert [m.p for m in model.net if isinstance(m, nn.Dropout)] == [0.4, 0.4, 0.4]
    norms = [m for m in model.net if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 7 and all((m.eps, m.momentum) == (1e-3, 0.01) for m in norms)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)  # keras_init leaves them alone


@pytest.mark.parametrize("channels_last", [False, True])
def test_accurate_cnn_output_shape(channels_last: bool) -> None:
    model = AccurateCNN(channels_last=channels_last).eval()
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    narrow = AccurateCNN(filters=(8, 16, 32), dropout=0.1).eval()
    assert narrow(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert sum(isinstance(m, nn.Conv2d) and m.out_channels == 32 for m in narrow.net) == 1


class LossPerEpoch(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def _trainer(**kwargs) -> pl.Trainer:
    options = {
        "accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "max_epochs": 1,
    }  # fmt: skip
    return pl.Trainer(**{**options, **kwargs})


def test_accurate_cnn_learns_tiny_data(tiny_mnist: TinyMNIST) -> None:
    pl.seed_everything(0)
    dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, download=False, batch_size=32)
    model = AccurateCNN(lr_schedule="exponential", channels_last=True)
    losses = LossPerEpoch()
    _trainer(max_epochs=3, callbacks=[losses], limit_val_batches=0).fit(model, dm)
    assert losses.losses[-1] < 0.3 * losses.losses[0]


def test_exponential_schedule_decays_per_epoch(tiny_mnist: TinyMNIST) -> None:
    dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, download=False, batch_size=64)
    model = CompactCNN(lr=1e-3, lr_schedule="exponential", lr_decay=0.5)
    trainer = _trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**3)


@torch.no_grad()
def test_label_smoothing_changes_the_training_loss_only() -> None:
    torch.manual_seed(0)
    batch = (torch.rand(8, 1, 28, 28), torch.arange(8))
    plain, smooth = CompactCNN().eval(), CompactCNN(label_smoothing=0.2).eval()
    smooth.load_state_dict(plain.state_dict())

    def loss(model: CompactCNN, stage: str) -> float:
        return model._shared_step(batch, stage)["loss"].item()

    assert loss(plain, "train") == pytest.approx(nn.functional.cross_entropy(plain(batch[0]), batch[1]).item())
    assert loss(smooth, "train") != pytest.approx(loss(plain, "train"))
    assert loss(smooth, "val") == pytest.approx(loss(plain, "val"))


# The transforms, as pure functions.


def _digits(n: int = 8) -> torch.Tensor:
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 6:22, 12:16] = 1.0  # a bar, the same in every image
    return images


def test_each_image_gets_its_own_transform() -> None:
    images = _digits()
    out = random_affine(images, DEOTTE, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    flat = out.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(len(flat)) for j in range(i))
    assert all(not torch.allclose(flat[i], images[0].flatten()) for i in range(len(flat)))


def test_the_same_seed_gives_the_same_transforms() -> None:
    images = _digits()

    def draw(seed: int) -> torch.Tensor:
        return random_affine(images, DEOTTE, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_the_identity_setting_returns_the_images_unchanged() -> None:
    images = torch.rand(4, 1, 28, 28)
    assert Augmentation().is_identity and not DEOTTE.is_identity
    assert torch.equal(random_affine(images, Augmentation(), torch.Generator().manual_seed(0)), images)
    identity = torch.eye(2, 3).expand(4, 2, 3)
    torch.testing.assert_close(apply_affine(images, identity), images, atol=1e-5, rtol=0)


def test_transforms_follow_image_geometry() -> None:
    images = torch.rand(2, 1, 28, 28)
    quarter_turn = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]).expand(2, 2, 3)
    torch.testing.assert_close(apply_affine(images, quarter_turn), torch.rot90(images, 1, (2, 3)), atol=1e-5, rtol=0)
    two_pixels = torch.tensor([[1.0, 0.0, 2 / 14], [0.0, 1.0, 0.0]]).expand(2, 2, 3)  # [-1, 1] spans 28 pixels
    shifted = apply_affine(images, two_pixels)
    torch.testing.assert_close(shifted[..., :-2], images[..., 2:], atol=1e-5, rtol=0)
    assert shifted[..., -2:].abs().max() < 1e-5  # what comes from outside the image is background


def test_draws_stay_within_the_ranges() -> None:
    theta = random_affine_matrices(2000, 28, 28, Augmentation(shift=0.1), torch.Generator().manual_seed(0))
    assert torch.equal(theta[:, :, :2], torch.eye(2, dtype=theta.dtype).expand(2000, 2, 2))
    pixels = theta[:, :, 2] * 14
    assert pixels.abs().max() <= 2.8 and pixels.abs().max() > 2.7
    theta = random_affine_matrices(2000, 28, 28, Augmentation(rotation=15), torch.Generator().manual_seed(0))
    angles = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]))
    assert angles.abs().max() <= 15 and angles.abs().max() > 14.9
    theta = random_affine_matrices(2000, 28, 28, Augmentation(zoom=0.15), torch.Generator().manual_seed(0))
    scales = torch.stack([theta[:, 0, 0], theta[:, 1, 1]])
    assert scales.min() >= 0.85 and scales.max() <= 1.15
    assert not torch.allclose(scales[0], scales[1])  # each axis on its own, as Keras' zoom_range


@pytest.mark.parametrize("bad", [{"rotation": -1}, {"zoom": 1.0}, {"shift": 1.5}, {"shear": 90}])
def test_out_of_range_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Augmentation(**bad)
    (name, value), config = next(iter(bad.items())), str(CONFIGS / "accurate.yaml")
    assert exit_code(["fit", "--config", config, f"--data.augment.{name}", str(value), "--print_config"]) == 2


def test_ranges_are_kept_as_plain_floats() -> None:
    assert all(type(value) is float for value in asdict(Augmentation(rotation=15, zoom=0.15)).values())


# The data module: which batches are augmented, and how they are drawn.


class BatchRecorder(Callback):
    """What the network's steps receive, per stage (sanity checking counted as validation)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[int, int, torch.Tensor, torch.Tensor]]] = {}

    def _keep(self, stage: str, trainer: pl.Trainer, batch, batch_idx: int) -> None:
        images, labels = batch
        self.seen.setdefault(stage, []).append((trainer.current_epoch, batch_idx, images.clone(), labels.clone()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._keep("train", trainer, batch, batch_idx)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep("sanity" if trainer.sanity_checking else "val", trainer, batch, batch_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep("test", trainer, batch, batch_idx)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep("predict", trainer, batch, batch_idx)


def _fit(tiny: TinyMNIST, epochs: int = 2, seed: int = 0, **trainer_options) -> tuple[BatchRecorder, MNISTDataModule]:
    recorder = BatchRecorder()
    dm = MNISTDataModule(
        data_dir=str(tiny.data_dir), download=False, batch_size=32, eval_batch_size=16, seed=seed, augment=DEOTTE
    )
    callbacks = [recorder, *trainer_options.pop("callbacks", [])]
    ckpt_path = trainer_options.pop("ckpt_path", None)
    trainer = _trainer(max_epochs=epochs, num_sanity_val_steps=1, callbacks=callbacks, **trainer_options)
    pl.seed_everything(0)
    trainer.fit(CompactCNN(), dm, ckpt_path=ckpt_path)
    return recorder, dm


def test_only_training_batches_are_augmented_and_labels_are_untouched(tiny_mnist: TinyMNIST) -> None:
    recorder, dm = _fit(tiny_mnist)
    trainer = _trainer(callbacks=[recorder])
    model = CompactCNN()
    trainer.test(model, dm)
    trainer.predict(model, dm)
    assert {"train", "sanity", "val", "test", "predict"} <= recorder.seen.keys()

    for stage, dataset in (("sanity", dm.data_val), ("val", dm.data_val), ("test", dm.data_test)):
        for _, batch_idx, images, labels in recorder.seen[stage]:
            rows = slice(16 * batch_idx, 16 * (batch_idx + 1))
            assert torch.equal(images, dm.normalize(dataset.images[rows].unsqueeze(1))), stage
            assert torch.equal(labels, dataset.labels[rows]), stage
    for _, _, images, index in recorder.seen["predict"]:
        assert torch.equal(images, dm.normalize(dm.data_predict.images[index].unsqueeze(1)))

    n = len(dm.data_train)
    for epoch, batch_idx, images, labels in recorder.seen["train"]:
        sampler = EpochShuffleSampler(n, seed=0)
        sampler.set_epoch(epoch)
        idx = list(sampler)[32 * batch_idx : 32 * (batch_idx + 1)]
        assert torch.equal(labels, dm.data_train.labels[idx])  # the same images, in the same order, labels as they were
        plain = dm.normalize(dm.data_train.images[idx].unsqueeze(1))
        assert all(not torch.allclose(a, b) for a, b in zip(images, plain, strict=True))  # every image moved
        assert images.min() >= 0 and images.max() <= 1  # interpolated pixels stay in range


def test_augmented_batches_depend_only_on_seed_epoch_and_batch(tiny_mnist: TinyMNIST, tmp_path: Path) -> None:
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}")
    first, _ = _fit(tiny_mnist, epochs=3, callbacks=[checkpoints], enable_checkpointing=True)
    again, _ = _fit(tiny_mnist, epochs=3)
    other_seed, _ = _fit(tiny_mnist, epochs=1, seed=1)
    resumed, _ = _fit(tiny_mnist, epochs=3, ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"))

    def batches(recorder: BatchRecorder, epoch: int) -> list[torch.Tensor]:
        return [images for e, _, images, _ in recorder.seen["train"] if e == epoch]

    for epoch in range(3):
        assert all(torch.equal(a, b) for a, b in zip(batches(first, epoch), batches(again, epoch), strict=True))
    assert not torch.equal(batches(first, 0)[0], batches(other_seed, 0)[0])
    assert not torch.equal(batches(first, 1)[0], batches(first, 2)[0])
    assert [e for e, *_ in resumed.seen["train"]] == [1] * 5 + [2] * 5  # 160 training images, batches of 32
    for epoch in (1, 2):  # the resumed run draws what the uninterrupted one drew
        assert all(torch.equal(a, b) for a, b in zip(batches(first, epoch), batches(resumed, epoch), strict=True))


def test_the_augmentation_setting_is_saved_as_plain_values(tiny_mnist: TinyMNIST) -> None:
    dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, augment=DEOTTE)
    assert dm.augmentation == DEOTTE and dm.hparams.augment == asdict(DEOTTE)
    assert MNISTDataModule(**dm.hparams).augmentation == DEOTTE  # as a checkpoint's hyperparameters rebuild it
    assert MNISTDataModule(augment=Augmentation()).augmentation is None
    assert MNISTDataModule().hparams.augment is None


def test_augmented_samples_figure_only_with_augmentation(tiny_mnist: TinyMNIST, tmp_path: Path) -> None:
    for augment in (DEOTTE, None):
        dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, download=False, augment=augment)
        logger = CSVLogger(tmp_path / "logs", name=str(augment is not None))
        trainer = _trainer(logger=logger, callbacks=[ReportFigures(num_images=8)], limit_train_batches=1)
        trainer.fit(CompactCNN(), dm)
        figures = Path(logger.log_dir) / "figures"
        assert (figures / "train_samples.png").is_file()
        assert (figures / "augmented_samples.png").is_file() == (augment is not None)


def test_accurate_config_trains_and_its_checkpoint_reads_weights_only(tiny_mnist: TinyMNIST) -> None:
    quick = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar",
             "false", "--data.eval_batch_size", "16", "--data.data_dir", str(tiny_mnist.data_dir)]  # fmt: skip
    main(["fit", "--config", str(CONFIGS / "accurate.yaml"), *quick])
    (run,) = runs("accurate")
    (checkpoint,) = (run / "checkpoints").glob("last-*.ckpt")
    saved = read_checkpoint(checkpoint)
    assert saved["datamodule_hyper_parameters"]["augment"] == asdict(DEOTTE)
    assert saved["hyper_parameters"]["lr_schedule"] == "onecycle"
    assert (run / "figures" / "augmented_samples.png").is_file()
    assert math.isfinite(saved["lr_schedulers"][0]["_last_lr"][0])
