"""The run's ``config.yaml``: LightningCLI's config saver, writing only into a run's own folder."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from mnist_lit.callbacks.run_folder import run_dir_or_warn


class RunConfigSaver(SaveConfigCallback):
    """LightningCLI's config saver, writing ``config.yaml`` only into a run's own folder.

    Each run gets a new ``version_N`` folder, so overwriting is safe there (and re-running with a fixed version does
    not fail); without a logger the stock saver would write ``./config.yaml``, perhaps over a file of the user's, so
    nothing is saved then.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if run_dir_or_warn(trainer, "config.yaml") is not None:
            super().setup(trainer, pl_module, stage)
