"""Using a trained network: one :class:`~mnist_lit.inference.runners.Runner` interface from raw pixels to
probabilities, in PyTorch for a checkpoint or in ONNX Runtime for an export. Importing this package imports neither."""
