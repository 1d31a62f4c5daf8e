"""The four MNIST files: what they must contain, and the check every copy of them passes.

Nothing enters ``data_dir`` without :func:`verify_idx_bytes`: the structure of the IDX file is checked first,
so a broken file gets a message that says what is wrong with it, then its size and SHA-256 against the
published MNIST release, so that only the real bytes are ever accepted.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from mnist_lit.errors import UserError

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
IMAGE_SIDE = 28
NUM_CLASSES = 10


class IdxFileError(UserError, ValueError):
    """An IDX file (or the bytes of one) is not the file it should be."""


@dataclass(frozen=True)
class IdxFileSpec:
    """What one uncompressed MNIST file must be: its name, kind, item count, size and SHA-256."""

    filename: str
    kind: str  # "images" or "labels"
    count: int
    sha256: str

    @property
    def magic(self) -> int:
        return IMAGE_MAGIC if self.kind == "images" else LABEL_MAGIC

    @property
    def header_size(self) -> int:
        return 16 if self.kind == "images" else 8

    @property
    def item_size(self) -> int:
        return IMAGE_SIDE * IMAGE_SIDE if self.kind == "images" else 1

    @property
    def nbytes(self) -> int:
        return self.header_size + self.count * self.item_size


#: The published MNIST release (the uncompressed files), as torchvision expects them in ``<root>/MNIST/raw``.
MNIST_FILES: tuple[IdxFileSpec, ...] = (
    IdxFileSpec(
        "train-images-idx3-ubyte", "images", 60000, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    IdxFileSpec(
        "train-labels-idx1-ubyte", "labels", 60000, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    IdxFileSpec(
        "t10k-images-idx3-ubyte", "images", 10000, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    IdxFileSpec(
        "t10k-labels-idx1-ubyte", "labels", 10000, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
)


def maybe_gunzip(data: bytes, origin: str) -> bytes:
    """Return ``data`` uncompressed if it is gzip, as is otherwise; a broken gzip stream is an IdxFileError."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as err:
        raise IdxFileError(f"{origin}: the gzip stream is truncated or corrupt ({err}).") from err


def verify_idx_bytes(data: bytes, spec: IdxFileSpec, origin: str) -> None:
    """Raise :class:`IdxFileError`, naming ``origin``, unless ``data`` is exactly the file ``spec`` describes.

    ``data`` is the uncompressed file. The checks run from the most to the least specific message: header,
    item count, length, label range, then size and SHA-256 against the published file.
    """
    if len(data) < spec.header_size:
        raise IdxFileError(
            f"{origin}: truncated: {len(data)} bytes, shorter than the {spec.header_size}-byte IDX header of "
            f"an MNIST {spec.kind} file."
        )
    magic, count = struct.unpack(">II", data[:8])
    if magic != spec.magic:
        raise IdxFileError(
            f"{origin}: wrong magic number: expected 0x{spec.magic:08x} (MNIST {spec.kind}), found 0x{magic:08x}."
        )
    if spec.kind == "images":
        rows, cols = struct.unpack(">II", data[8:16])
        if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
            raise IdxFileError(f"{origin}: expected {IMAGE_SIDE}x{IMAGE_SIDE} images, found {rows}x{cols}.")
    if count != spec.count:
        raise IdxFileError(f"{origin}: wrong item count: expected {spec.count} {spec.kind}, the header says {count}.")
    if len(data) != spec.nbytes:
        what = "truncated" if len(data) < spec.nbytes else "trailing bytes"
        raise IdxFileError(f"{origin}: {what}: expected {spec.nbytes} bytes, found {len(data)}.")
    if spec.kind == "labels":
        labels = np.frombuffer(data, dtype=np.uint8, offset=spec.header_size)
        bad = np.flatnonzero(labels >= NUM_CLASSES)
        if bad.size:
            raise IdxFileError(
                f"{origin}: label out of range: {bad.size} labels outside 0-9, the first is {labels[bad[0]]} "
                f"at index {bad[0]}."
            )
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise IdxFileError(f"{origin}: wrong SHA-256: expected {spec.sha256}, found {digest}.")


def encode_idx(array: np.ndarray, kind: str) -> bytes:
    """Serialize a uint8 array (N x 28 x 28 images, or N labels) as an uncompressed IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if kind == "images":
        header = struct.pack(">IIII", IMAGE_MAGIC, array.shape[0], *array.shape[1:])
    else:
        header = struct.pack(">II", LABEL_MAGIC, array.shape[0])
    return header + array.tobytes()
