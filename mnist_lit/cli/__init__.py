"""The command line: the entry point and its dispatch, the LightningCLI, and one module per other command.

Nothing else in the package imports from here. Importing this package imports neither torch nor Lightning, so that
``python -m mnist_lit --help`` and ``classify`` with an ONNX file stay fast: :func:`main` (in
:mod:`mnist_lit.cli.dispatch`) runs any command in-process, and :func:`build_cli` (in
:mod:`mnist_lit.cli.lightning_cli`) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mnist_lit.cli.dispatch import main

if TYPE_CHECKING:
    from mnist_lit.cli.lightning_cli import build_cli

__all__ = ["build_cli", "main"]


def __getattr__(name: str) -> Any:
    """``mnist_lit.cli.build_cli``, imported when first asked for (PEP 562)."""
    if name == "build_cli":
        from mnist_lit.cli.lightning_cli import build_cli

        return build_cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
