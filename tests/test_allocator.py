"""The command's malloc settings: applied on glibc, and left alone where the user chose otherwise."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

PROBE = "from mnist_lit.utils.allocator import retain_heap; print(retain_heap())"
GLIBC = sys.platform.startswith("linux") and "libc.so" in (ctypes.util.find_library("c") or "")


def retain_heap_in_a_fresh_process(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MNIST_LIT_RETAIN_HEAP")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt: Linux with the GNU C library only")
def test_the_settings_are_applied_on_glibc() -> None:
    assert retain_heap_in_a_fresh_process() == "True"


@pytest.mark.parametrize(
    "env",
    [
        {"MNIST_LIT_RETAIN_HEAP": "0"},
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"},
    ],
)
def test_a_users_own_choice_is_left_alone(env: dict[str, str]) -> None:
    assert retain_heap_in_a_fresh_process(**env) == "False"
