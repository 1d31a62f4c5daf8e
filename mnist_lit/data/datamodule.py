"""The MNIST LightningDataModule: verified files in, in-memory uint8 splits out, normalized on the device."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jsonargparse.typing import OpenUnitInterval, PositiveFloat, PositiveInt
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lit.data import idx
from mnist_lit.data.acquire import ensure_mnist_files
from mnist_lit.data.augment import Augmentation, random_affine
from mnist_lit.data.datasets import EpochShuffleSampler, TensorImageDataset, keep_batch, own_generator, take
from mnist_lit.data.distort import Distortions, distort
from mnist_lit.data.images import InvertMode, PredictInputError, load_predict_inputs
from mnist_lit.data.normalization import Normalization, formula, normalize, standardize, to_unit
from mnist_lit.data.outliers import OUTLIER_LABEL, OutlierExposure, family_rng, font_digits, outlier_pool

log = logging.getLogger(__name__)

ValSplit = Literal["keras", "random", "test"]


class MNISTDataModule(LightningDataModule):
    """MNIST from verified IDX files, split as the notebooks split it, served from memory.

    Args:
        data_dir: root folder; the files live in ``data_dir/MNIST/raw`` (torchvision's layout).
        batch_size: training batch size (per process under DDP).
        eval_batch_size: batch size for validation, test and predict; it changes speed and memory, not the counts
            (the mean loss only in its last bits, from the order of summation). 256 is faster here than 1000 and
            keeps a fit's peak memory lower (the benchmark page has the figure): a batch's activations are the
            largest thing a run holds.
        val_split: ``keras`` holds out the last ``val_fraction`` of the training arrays, unshuffled, as Keras'
            ``validation_split``; ``random`` a seeded random subset of that size; ``test`` validates on the
            official test set (notebook B) and trains on all 60,000 images.
        val_fraction: fraction of the 60,000 training images held out for validation.
        normalization: ``unit`` divides pixels by 255 (both notebooks); ``standardize`` then subtracts 0.1307
            and divides by 0.3081. It is saved in checkpoints, and a checkpoint's choice wins when loaded.
        seed: seeds the random split, the per-epoch shuffling of the training batches and their augmentation. Unset:
            ``python -m mnist_lit`` gives it the run's ``seed_everything``; made directly, 0.
        download: allow the network sources when files are missing (see :mod:`mnist_lit.data.acquire`).
        download_timeout: seconds each network attempt may take before it is abandoned.
        keep_on_device: copy the training, validation and test images once to the training device (a GPU), so
            that batches are cut there and nothing is copied per batch; MNIST takes about 55 MB. Without a GPU it
            changes nothing.
        predict_path: what ``predict`` classifies: an image file (anything Pillow reads), a ``.npy`` array (H x W,
            or N x H x W for N images), a folder of such files, or a glob pattern; each is prepared as MNIST's
            digits were (see :func:`mnist_lit.data.images.mnist_preprocess`). Unset: the MNIST test set.
        predict_invert: ``auto`` makes dark-on-light pictures light on dark, as MNIST's are, judging by their
            border; ``always`` and ``never`` force the choice.
        augment: ranges of a random affine transform applied to each training image (rotation, zoom, shift, shear;
            see :class:`~mnist_lit.data.augment.Augmentation`); validation, test and predict images are never
            transformed. Unset or all zero: none. Each batch's draws depend only on the seed, the epoch, the batch's
            place in the epoch and the process, so a resumed run augments as the uninterrupted one did.
        distort: the share of training images given each "digits from elsewhere" distortion (thicker and thinner
            strokes, low resolution, blur, JPEG artefacts, uneven background, inverted polarity; see
            :class:`~mnist_lit.data.distort.Distortions`), after the affine transform. Unset: none.
        outliers: non-digits mixed into each training batch, labelled ``-1`` (outlier exposure; see
            :class:`~mnist_lit.data.outliers.OutlierExposure`): made once from a seed when training starts,
            transformed with the batch. Validation, test and predict never contain any. Unset: none.
    """

    #: The constructor's arguments (``save_hyperparameters``), read as attributes; Lightning types the property loosely.
    hparams: AttributeDict

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 256,
        val_split: ValSplit = "keras",
        val_fraction: OpenUnitInterval = 0.2,
        normalization: Normalization = "unit",
        seed: int | None = None,
        download: bool = True,
        download_timeout: PositiveFloat = 30.0,
        keep_on_device: bool = False,
        predict_path: str | None = None,
        predict_invert: InvertMode = "auto",
        augment: Augmentation | None = None,
        distort: Distortions | None = None,
        outliers: OutlierExposure | None = None,
    ) -> None:
        super().__init__()
        if isinstance(augment, Mapping):  # as saved in a checkpoint's hyperparameters
            augment = Augmentation(**augment)
        if isinstance(distort, Mapping):
            distort = Distortions(**distort)
        if isinstance(outliers, Mapping):
            outliers = OutlierExposure(**outliers)
        self.augmentation = None if augment is None or augment.is_identity else augment
        self.distortions = None if distort is None or distort.is_identity else distort
        self.outliers = outliers
        # save_hyperparameters reads the arguments from this function's variables: plain values, not the dataclass,
        # because checkpoints are read weights-only (mnist_lit.training.checkpoints) and the run report is JSON.
        augment = None if self.augmentation is None else asdict(self.augmentation)  # type: ignore[assignment]
        distort = None if self.distortions is None else asdict(self.distortions)  # type: ignore[assignment]
        outliers = None if outliers is None else _plain(asdict(outliers))
        seed = 0 if seed is None else seed
        data_dir = str(data_dir)  # a Path would be pickled into checkpoints, which are read weights-only
        self.save_hyperparameters()
        # The training epoch and the number of its batches augmented so far (see _batch_generator).
        self._augmented: tuple[int, int] | None = None
        self.data_dir = Path(data_dir)
        self.normalization: Normalization = normalization
        self.data_train: TensorImageDataset | None = None
        self.data_val: TensorImageDataset | None = None
        self.data_test: TensorImageDataset | None = None
        # The predict set's items are (image, index); the index finds the input's name, and its label if known.
        self.data_predict: TensorImageDataset | None = None
        self.predict_names: list[str] = []
        self.predict_labels: Tensor | None = None
        self.predict_skipped: list[tuple[str, str]] = []
        #: The outlier images of ``outliers`` (M x 28 x 28 uint8), made with the first training loader (validate,
        #: test, predict and ``calibrate`` never need them).
        self.outlier_images: Tensor | None = None
        #: The labelled font digits of ``outliers.font_digits`` (images K x 28 x 28 uint8, labels K), made with them.
        self.font_digit_pool: tuple[Tensor, Tensor] | None = None

    @property
    def raw_dir(self) -> Path:
        """Where the four IDX files live, as torchvision's ``MNIST`` dataset expects them."""
        return self.data_dir / "MNIST" / "raw"

    def prepare_data(self) -> None:
        """Acquire and verify the files (Lightning calls this on one process per node; it assigns no state).

        Predicting a user's own files (``predict_path``) needs no MNIST file, so nothing is fetched for it.
        """
        predicting = self.trainer is not None and self.trainer.state.fn == "predict"
        if predicting and self.hparams.predict_path is not None:
            return
        ensure_mnist_files(self.raw_dir, download=self.hparams.download, timeout=self.hparams.download_timeout)

    def setup(self, stage: str | None = None) -> None:
        """Load the verified files once and build the splits; calling it again is free.

        With ``predict_path`` set, ``predict`` reads the user's files instead, and needs none of MNIST's.
        """
        if self.hparams.predict_path is not None and stage in (None, "predict"):
            self._setup_predict_files()
            if stage == "predict":
                return
        if self.data_train is not None:
            return
        missing = [spec.filename for spec in idx.MNIST_FILES if not (self.raw_dir / spec.filename).is_file()]
        if missing:
            raise FileNotFoundError(
                f"MNIST files missing from {self.raw_dir}: {', '.join(missing)}. Run prepare_data() first "
                "(the Trainer does), or place the files there by hand."
            )
        # torchvision's IDX readers, on the files just verified (its MNIST class could prefer a stale
        # processed/*.pt left by an older torchvision).
        raw = self.raw_dir
        train_x = read_image_file(str(raw / "train-images-idx3-ubyte"))
        train_y = read_label_file(str(raw / "train-labels-idx1-ubyte"))
        test_x = read_image_file(str(raw / "t10k-images-idx3-ubyte"))
        test_y = read_label_file(str(raw / "t10k-labels-idx1-ubyte"))
        # With keep_on_device, the splits live on the training device: batches are then cut there, no copy per batch.
        trainer = self.trainer
        device = trainer.strategy.root_device if self.hparams.keep_on_device and trainer else torch.device("cpu")

        def split(images: Tensor, labels: Tensor) -> TensorImageDataset:
            return TensorImageDataset(images.to(device), labels.to(device))

        self.data_test = split(test_x, test_y)
        train_idx, val_idx = self.split_indices(len(train_x))
        self.data_train = split(*take(train_idx, train_x, train_y))
        self.data_val = self.data_test if val_idx is None else split(*take(val_idx, train_x, train_y))
        if self.hparams.predict_path is None:
            self.data_predict = TensorImageDataset(test_x, torch.arange(len(test_x)))
            self.predict_names = [f"mnist_test[{i}]" for i in range(len(test_x))]
            self.predict_labels = test_y
        if self.trainer is None or self.trainer.is_global_zero:
            log.info("%s", self.summary())

    def summary(self) -> str:
        """What the splits hold and how they were made, and the training split's class balance, in a few lines
        (the notebooks print their arrays' shapes and counts before training)."""
        train, val, test = self._ready(self.data_train), self._ready(self.data_val), self._ready(self.data_test)
        fraction = f"{self.hparams.val_fraction:.0%}"
        how = {
            "keras": f"the last {fraction} of the training set, as Keras' validation_split",
            "random": f"a random {fraction} of the training set, seed {self.hparams.seed}",
            "test": "the test set, as notebook B's validation_data",
        }[self.hparams.val_split]
        scaling = formula(self.normalization)
        side = train.images.shape[-1]
        counts = torch.bincount(train.labels.cpu(), minlength=10).tolist()
        balance = ", ".join(f"{digit}: {count:,}" for digit, count in enumerate(counts))
        share = [count / max(1, len(train)) for count in counts]
        return (
            f"Data: {len(train):,} train / {len(val):,} validation ({how}) / {len(test):,} test; "
            f"{side}x{side}, {scaling}.\n"
            f"Training split per digit: {balance} (from {min(share):.1%} to {max(share):.1%} of it)."
        )

    def make_outliers(self, train: TensorImageDataset) -> Tensor:
        """The pool of outlier images that training batches draw from, made from ``outliers``' seed (the families
        made from digits take them from the training split, never from validation or test)."""
        assert self.outliers is not None
        o = self.outliers
        digits = (train.images.cpu().numpy(), train.labels.cpu().numpy())
        images, _ = outlier_pool(o.families, o.per_family, o.seed, digits)
        if self.trainer is None or self.trainer.is_global_zero:
            fonts = f"; {o.font_digits} font digits per batch" if o.font_digits else ""
            log.info("Outlier exposure: %d images of %d families, %d per batch%s.", len(images), len(o.families),
                     o.per_batch, fonts)  # fmt: skip
        return torch.from_numpy(images)

    def make_font_digits(self) -> tuple[Tensor, Tensor] | None:
        """The labelled font digits training batches draw ``outliers.font_digits`` from (None when they draw none),
        made from ``outliers``' seed."""
        assert self.outliers is not None
        if not self.outliers.font_digits:
            return None
        images, labels = font_digits(family_rng(self.outliers.seed, "font_digits"), self.outliers.per_family)
        return torch.from_numpy(images), torch.from_numpy(labels)

    def _setup_predict_files(self) -> None:
        """Read and preprocess the user's inputs once, reporting each one that has to be skipped, and why."""
        if self.data_predict is not None:
            return
        inputs = load_predict_inputs(self.hparams.predict_path, self.hparams.predict_invert)
        if self.trainer is None or self.trainer.is_global_zero:  # every process reads them; one reports
            for name, reason in inputs.skipped:
                log.warning("Skipped %s: %s.", name, reason)
        processes = self.trainer.world_size if self.trainer is not None else 1
        if processes > len(inputs.images):  # a process with no input would skip predict and stall the others
            raise PredictInputError(
                f"data.predict_path {self.hparams.predict_path}: {len(inputs.images)} inputs for {processes} "
                "processes; predict with fewer processes (--trainer.devices 1)."
            )
        images = torch.from_numpy(inputs.images)
        self.data_predict = TensorImageDataset(images, torch.arange(len(images)))
        self.predict_names = inputs.names
        self.predict_skipped = inputs.skipped

    def split_indices(self, n: int) -> tuple[Tensor, Tensor | None]:
        """Indices of the training and validation images among the ``n`` training images (None: use test)."""
        if self.hparams.val_split == "test":
            return torch.arange(n), None
        n_val = round(n * self.hparams.val_fraction)
        if self.hparams.val_split == "keras":
            order = torch.arange(n)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed))
        return order[: n - n_val].sort().values, order[n - n_val :].sort().values

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches, in an order that depends only on the seed and the epoch (see EpochShuffleSampler)."""
        dataset = self._ready(self.data_train)
        self._augmented = None  # a new fit counts its batches from the start (see _batch_generator)
        if self.outliers is not None and self.outlier_images is None:  # made for training only, once
            self.outlier_images = self.make_outliers(dataset).to(dataset.images.device)
            pool = self.make_font_digits()
            self.font_digit_pool = None if pool is None else (pool[0].to(dataset.images.device), pool[1])
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.hparams.seed),
            generator=own_generator(self.hparams.seed),
            collate_fn=keep_batch,
        )

    def val_dataloader(self) -> DataLoader:
        """Every validation image once, in order."""
        return self._eval_loader(self._ready(self.data_val))

    def test_dataloader(self) -> DataLoader:
        """Every test image once, in order."""
        return self._eval_loader(self._ready(self.data_test))

    def predict_dataloader(self) -> DataLoader:
        """Batches of (uint8 images, index into ``predict_names``): the user's inputs, or else the test set."""
        return self._eval_loader(self._ready(self.data_predict))

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        """In order, every image exactly once: under DDP each rank takes its own unpadded shard.

        Lightning's default DistributedSampler pads the last shard by repeating images, which would count them
        twice in the metrics; passing a DistributedSampler subclass ourselves stops Lightning from injecting it.
        """
        sampler = None
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            dataset,
            batch_size=self.hparams.eval_batch_size,
            sampler=sampler,
            generator=own_generator(self.hparams.seed),
            collate_fn=keep_batch,
        )

    def _ready(self, dataset: TensorImageDataset | None) -> TensorImageDataset:
        if dataset is None:
            raise RuntimeError("MNISTDataModule.setup() has not run: call prepare_data() and setup() first.")
        return dataset

    def predict_pixels(self, index: Tensor) -> Tensor:
        """The predict inputs at ``index`` (the second item of each predict batch) as they were read: uint8 pixels,
        N x 1 x 28 x 28, on the predict set's device, before the normalization the batches get after the transfer;
        for a network that takes raw pixels and normalizes inside itself, as an ONNX export does."""
        images = self._ready(self.data_predict).images
        return images[index.to(images.device)].unsqueeze(1)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 pixels to float, on whatever device ``images`` is on: /255, then standardized if chosen."""
        return normalize(images, self.normalization)

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """uint8 images (N x 1 x H x W) as pixels / 255, each moved by its own random transform from ``generator``
        (unmoved without augmentation), on the images' device.

        The transforms work on pixels / 255, whose background is 0, the value they give the pixels that come from
        outside the image; standardizing first would make those mid-grey. Standardization comes after.
        """
        return random_affine(to_unit(images), self.augmentation or Augmentation(), generator)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Convert the uint8 images to normalized floats after they reach the device (4x less to copy), and
        augment them first when they are training batches (never in validation, sanity checks, test or predict).
        A bare tensor is not a batch of this data but the model summary's example input, and passes unchanged."""
        if isinstance(batch, Tensor):
            return batch
        images, *rest = batch
        trainer = self.trainer
        transformed = self.transforms_images or self.outliers is not None
        if transformed and trainer is not None and trainer.training:
            generator = self._batch_generator()
            if self.outliers is not None:
                images, labels = self.add_outliers(images, rest[0], generator)
                rest = [labels, *rest[1:]]
            return (self.transform(images, generator), *rest)
        return (self.normalize(images), *rest)

    @property
    def transforms_images(self) -> bool:
        """Whether training moves or distorts its images (``data.augment``, ``data.distort``)."""
        return self.augmentation is not None or self.distortions is not None

    def transform(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """uint8 images (N x 1 x H x W) as training sees them: augmented, distorted, then normalized, each image's
        draws from ``generator``."""
        x = self.augment(images, generator)
        if self.distortions is not None:
            x = distort(x, self.distortions, generator)
        return standardize(x, self.normalization)

    def add_outliers(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The batch with ``outliers.per_batch`` outlier images appended, drawn from the pool by ``generator`` and
        labelled :data:`~mnist_lit.data.outliers.OUTLIER_LABEL`, then ``outliers.font_digits`` font digits with
        their labels."""
        assert self.outliers is not None and self.outlier_images is not None, "train_dataloader() makes the outliers"
        pool = self.outlier_images
        index = torch.randint(len(pool), (self.outliers.per_batch,), generator=generator, device=generator.device)
        extra = [pool[index.to(pool.device)].to(images.device).unsqueeze(1)]
        tags = [torch.full((len(extra[0]),), OUTLIER_LABEL, dtype=labels.dtype, device=labels.device)]
        if self.font_digit_pool is not None:
            digits, digit_labels = self.font_digit_pool
            index = torch.randint(
                len(digits), (self.outliers.font_digits,), generator=generator, device=generator.device
            )
            extra.append(digits[index.to(digits.device)].to(images.device).unsqueeze(1))
            tags.append(digit_labels[index].to(labels.device, labels.dtype))
        return torch.cat([images, *extra]), torch.cat([labels, *tags])

    def _batch_generator(self) -> torch.Generator:
        """The generator of the next training batch's transforms, seeded from the seed, the epoch, the batch's
        place in the epoch and the process's rank alone.

        This hook is given no batch index, so the data module counts the training batches itself: the count restarts
        when the epoch changes and when a fit makes its training loader. Batch i of epoch k is then transformed the
        same way whatever came before, in particular in a run resumed at the start of epoch k (checkpoints are taken
        at epochs' ends), and each process of a DDP run draws its own. The generator lives on the CPU: its draws
        (six numbers per image) are the same on every device, and only the resampling runs on the batch's device.
        """
        trainer = self.trainer
        assert trainer is not None, "training batches are transformed only during a fit"
        epoch = trainer.current_epoch
        if self._augmented is None or self._augmented[0] != epoch:
            self._augmented = (epoch, 0)
        index = self._augmented[1]
        self._augmented = (epoch, index + 1)
        entropy = [self.hparams.seed % 2**64, epoch, index, trainer.global_rank]
        return torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))

    def state_dict(self) -> dict[str, Any]:
        """Saved in each checkpoint, so that evaluation and prediction normalize as training did."""
        return {"normalization": self.normalization}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("normalization", self.normalization)
        if saved != self.normalization:
            log.warning(
                "The checkpoint was trained with data.normalization=%s; using it instead of the configured %s.",
                saved,
                self.normalization,
            )
            self.normalization = saved


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: the form YAML, JSON and a weights-only checkpoint all keep."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
