"""Runs ``mnist_lit.cli.main`` on the tiny files in ``<data_dir>/MNIST/raw`` for the multi-process tests.

Lightning's DDP launcher starts the other ranks by running this same script again, so everything a rank needs
(accepting the tiny files as MNIST, counting acquisitions) is set up here, not in the test process.
Usage: python tests/ddp_driver.py <data_dir> <mnist_lit CLI arguments, which include --data.data_dir data_dir>
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_lit.cli import main  # noqa: E402
from mnist_lit.data import datamodule, idx  # noqa: E402
from mnist_lit.data.idx import IdxFileSpec  # noqa: E402


def accept_tiny_files(raw_dir: Path) -> None:
    specs = []
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        data = (raw_dir / name).read_bytes()
        count = int.from_bytes(data[4:8], "big")
        specs.append(
            IdxFileSpec(name, "images" if "images" in name else "labels", count, hashlib.sha256(data).hexdigest())
        )
    idx.MNIST_FILES = tuple(specs)


def count_acquisitions(log: Path) -> None:
    acquire = datamodule.ensure_mnist_files

    def counted(*args, **kwargs):
        with log.open("a") as handle:
            handle.write(f"rank {os.environ.get('LOCAL_RANK', '0')}\n")
        return acquire(*args, **kwargs)

    datamodule.ensure_mnist_files = counted


if __name__ == "__main__":
    data_dir = Path(sys.argv[1])
    accept_tiny_files(data_dir / "MNIST" / "raw")
    count_acquisitions(data_dir / "acquisitions.log")
    main(sys.argv[2:])
