"""``python -m mnist_lit``: the LightningCLI entry point (the top-level ``--help`` answers without importing it)."""

from mnist_lit.cli.dispatch import entry_point

if __name__ == "__main__":
    entry_point()
