"""Verification of IDX files: every kind of broken file is rejected with a message that says what is wrong."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from mnist_lit.data.idx import (
    IdxFileError,
    IdxFileSpec,
    encode_idx,
    maybe_gunzip,
    verify_idx_bytes,
)
from mnist_lit.utils.io import atomic_write_bytes
from tests.helpers import synthetic_digits


def _images(n: int = 5) -> tuple[bytes, IdxFileSpec]:
    data = encode_idx(synthetic_digits(n, seed=3)[0], "images")
    return data, IdxFileSpec("train-images-idx3-ubyte", "images", n, hashlib.sha256(data).hexdigest())


def _labels(values: list[int]) -> tuple[bytes, IdxFileSpec]:
    data = encode_idx(np.array(values, dtype=np.uint8), "labels")
    return data, IdxFileSpec("train-labels-idx1-ubyte", "labels", len(values), hashlib.sha256(data).hexdigest())


def test_valid_files_pass() -> None:
    for data, spec in (_images(), _labels([0, 9, 3])):
        verify_idx_bytes(data, spec, "here")
        assert spec.nbytes == len(data)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (
            lambda d: struct.pack(">I", 0x00000801) + d[4:],
            "wrong magic number: expected 0x00000803 (MNIST images), found 0x00000801",
        ),
        (lambda d: d[:-10], "truncated: expected 3936 bytes, found 3926"),
        (lambda d: d[:10], "truncated: 10 bytes, shorter than the 16-byte IDX header"),
        (lambda d: d[:4] + struct.pack(">I", 6) + d[8:], "wrong item count: expected 5 images, the header says 6"),
        (lambda d: d + b"\x00", "trailing bytes: expected 3936 bytes, found 3937"),
        (lambda d: d[:8] + struct.pack(">II", 32, 32) + d[16:], "expected 28x28 images, found 32x32"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "wrong SHA-256: expected"),
    ],
    ids=["magic", "truncated", "no-header", "count", "trailing", "shape", "sha256"],
)
def test_broken_image_files_are_rejected_with_a_reason(mangle, message: str) -> None:
    data, spec = _images()
    with pytest.raises(IdxFileError, match="^somefile.gz: ") as err:
        verify_idx_bytes(mangle(data), spec, "somefile.gz")
    assert message in str(err.value)


def test_label_out_of_range_names_the_value_and_index() -> None:
    good, spec = _labels([1, 2, 3, 4])
    bad = good[:-2] + bytes([10, 4])
    with pytest.raises(IdxFileError, match="label out of range: 1 labels outside 0-9, the first is 10 at index 2"):
        verify_idx_bytes(bad, spec, "labels")


def test_truncated_gzip_is_rejected() -> None:
    data, _ = _images()
    compressed = gzip.compress(data)
    assert maybe_gunzip(compressed, "x") == data
    with pytest.raises(IdxFileError, match="x.gz: the gzip stream is truncated or corrupt"):
        maybe_gunzip(compressed[: len(compressed) // 2], "x.gz")


def test_uncompressed_bytes_pass_through_gunzip() -> None:
    data, _ = _images()
    assert maybe_gunzip(data, "x") is data


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "raw" / "file"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("mnist_lit.utils.io.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file"]
