"""``python -m mnist_lit``: the LightningCLI entry point."""

from mnist_lit.cli import main

if __name__ == "__main__":
    main()
