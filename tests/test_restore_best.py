"""Restore-best-weights: after fit the model holds the best epoch's weights, and test reports that epoch."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from mnist_lit.callbacks import RestoreBestWeights
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.models import CompactCNN
from tests.helpers import TinyMNIST

GOOD_EPOCHS = 3


class SabotageAfter(Callback):
    """From epoch ``GOOD_EPOCHS`` on, add large noise to the weights, so val_loss worsens from then on."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch >= GOOD_EPOCHS:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.add_(torch.randn_like(p))


class Snapshots(Callback):
    """The weights and val_loss at the end of each epoch's validation."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.val_loss: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.states.append({k: v.clone() for k, v in pl_module.state_dict().items()})
            self.val_loss.append(float(trainer.callback_metrics["val/loss"]))


def test_fit_ends_holding_the_best_epoch_and_test_reports_it(tiny_mnist: TinyMNIST, tmp_path) -> None:
    pl.seed_everything(0, verbose=False)
    # The test set doubles as validation set, so the test after fit must reproduce the best val numbers.
    dm = MNISTDataModule(data_dir=tiny_mnist.data_dir, batch_size=20, val_split="test", download=False)
    restore, snapshots = RestoreBestWeights(monitor="val/loss"), Snapshots()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_top_k=1)
    trainer = pl.Trainer(
        max_epochs=20, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[EarlyStopping("val/loss", patience=3), restore, SabotageAfter(), snapshots, checkpoint],
    )  # fmt: skip
    model = CompactCNN(lr=3e-3)
    trainer.fit(model, datamodule=dm)

    best = min(range(len(snapshots.val_loss)), key=snapshots.val_loss.__getitem__)
    assert best < GOOD_EPOCHS <= len(snapshots.val_loss) - 3  # it got worse and early stopping fired
    assert restore.best_epoch == best
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots.states[best][key], rtol=0, atol=0)
    assert f"epoch={best}-" in checkpoint.best_model_path  # the checkpoint kept is that epoch too

    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test/loss"] == pytest.approx(snapshots.val_loss[best], rel=1e-6)


def test_the_best_weights_survive_a_checkpoint_and_a_new_fit_starts_afresh() -> None:
    restore = RestoreBestWeights()
    model = CompactCNN()
    restore.best_score, restore.best_epoch = 0.5, 3
    restore._best_weights = {k: v.clone() for k, v in model.state_dict().items()}
    resumed = RestoreBestWeights()
    resumed.load_state_dict(restore.state_dict())  # as Lightning does when a fit resumes from a checkpoint
    assert (resumed.best_score, resumed.best_epoch) == (0.5, 3)
    assert torch.equal(resumed._best_weights["net.0.weight"], model.state_dict()["net.0.weight"])

    class FreshTrainer:
        ckpt_path = None

    resumed.on_fit_start(FreshTrainer(), model)  # a new fit, not a resumed one, forgets the old best
    assert resumed.best_epoch is None and resumed._best_weights is None and resumed.best_score == float("inf")
