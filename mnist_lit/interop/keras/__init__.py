"""Keras weights <-> mnist_lit networks: the notebooks' Keras models read into mnist_lit's networks, and networks
written back as Keras models, with the same predictions.

- :mod:`.files`: Keras files read with h5py (no TensorFlow, no Keras).
- :mod:`.network`: an mnist_lit network's layers in Keras' order, those with weights.
- :mod:`.mapping`: the weight layouts mapped both ways (the Flatten re-ordering included).
- :mod:`.check`: whether a Keras model computes what a network computes, naming the first difference.
- :mod:`.writing`: Keras models built and saved through Keras itself, loadable on every Keras backend.
"""

from mnist_lit.interop.keras.check import check_architecture, keras_ops, torch_ops
from mnist_lit.interop.keras.files import KerasFileError, KerasLayer, KerasModelFile, keras_save_names, read_keras_file
from mnist_lit.interop.keras.mapping import (
    conv_kernel_to_keras,
    conv_kernel_to_torch,
    dense_kernel_to_keras,
    dense_kernel_to_torch,
    keras_to_state_dict,
    network_to_keras_weights,
)
from mnist_lit.interop.keras.network import WeightedLayer, network_layers, weighted_layers
from mnist_lit.interop.keras.writing import (
    KerasBackendError,
    KerasUnavailableError,
    backend_names,
    build_keras_model,
    import_keras_package,
    keras_model_for,
    name_public_optimizer,
    public_class,
    save_keras_model,
)

__all__ = [
    "KerasBackendError",
    "KerasFileError",
    "KerasLayer",
    "KerasModelFile",
    "KerasUnavailableError",
    "WeightedLayer",
    "backend_names",
    "build_keras_model",
    "check_architecture",
    "conv_kernel_to_keras",
    "conv_kernel_to_torch",
    "dense_kernel_to_keras",
    "dense_kernel_to_torch",
    "import_keras_package",
    "keras_model_for",
    "keras_ops",
    "keras_save_names",
    "keras_to_state_dict",
    "name_public_optimizer",
    "network_layers",
    "network_to_keras_weights",
    "public_class",
    "read_keras_file",
    "save_keras_model",
    "torch_ops",
    "weighted_layers",
]
