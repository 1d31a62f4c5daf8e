"""mnist_lit: two Keras MNIST notebooks, reimplemented faithfully with PyTorch Lightning."""

__version__ = "0.1.0"
