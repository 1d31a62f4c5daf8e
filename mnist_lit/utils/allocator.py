"""Keep glibc's malloc from handing freed tensor memory back to the kernel between training steps.

PyTorch's CPU allocator is the C library's ``malloc``. A training step of a small network frees and allocates the
same few megabytes of activations and gradients hundreds of times per epoch. glibc serves allocations of about 128 KiB
and more with a fresh ``mmap`` (its threshold grows only as far as the largest block freed so far) and trims the top of
its heap back to the kernel whenever more than twice that threshold is free there, so each step's buffers come back
as new pages, which the kernel faults in and zeroes one 4 KiB page at a time (the benchmark page measures what that
costs a step). PyTorch's CPU performance guide recommends jemalloc or
tcmalloc for this reason; the same effect with glibc alone is two ``mallopt`` settings, made here once per process:
a fixed mmap threshold, so blocks under it come from the heap, and no trimming, so freed heap stays mapped.

The cost is memory the process does not return while it runs (at most its peak, which it reached anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap: every activation, gradient and batch of the networks here
#: (notebook A's largest, 64 x 32 x 26 x 26 floats, is 5.5 MB); the dataset tensors above it stay mmap'd.
MMAP_THRESHOLD = 32 * 2**20
#: Free heap kept mapped before glibc trims it: more than any process here frees at once.
TRIM_THRESHOLD = 2**30
#: Set to 0 to leave malloc's settings as they are (for example, to measure the difference).
ENV_SWITCH = "MNIST_LIT_RETAIN_HEAP"
#: glibc's own environment settings: a user who set them chose, and is left alone.
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def retain_heap() -> bool:
    """Apply the two ``mallopt`` settings above to this process, once it is known to run on glibc's malloc.

    Nothing changes (and ``False`` is returned) off Linux, with another C library, with an allocator preloaded
    (``LD_PRELOAD``: jemalloc, tcmalloc), where the user set glibc's own variables, or with
    ``MNIST_LIT_RETAIN_HEAP=0``. Returns whether the settings were applied.
    """
    if os.environ.get(ENV_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if os.environ.get("LD_PRELOAD") or any(name in os.environ for name in GLIBC_VARIABLES):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  # present in glibc only: musl and others raise AttributeError
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
