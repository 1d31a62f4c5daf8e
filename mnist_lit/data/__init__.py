"""MNIST acquisition, verification and the LightningDataModule."""

from mnist_lit.data.acquire import MNISTUnavailableError, ensure_mnist_files
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.files import MNIST_FILES, IdxFileError, IdxFileSpec, verify_idx_bytes

__all__ = [
    "MNIST_FILES",
    "IdxFileError",
    "IdxFileSpec",
    "MNISTDataModule",
    "MNISTUnavailableError",
    "ensure_mnist_files",
    "verify_idx_bytes",
]
