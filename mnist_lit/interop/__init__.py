"""Networks in and out of mnist_lit: Keras weights (:mod:`.keras`), ONNX (:mod:`.onnx`), and the commands that use
them (:mod:`.commands`: ``import-keras`` and ``export``).

Nothing here is imported by ``fit``: h5py, Keras, ONNX and ONNX Runtime are optional extras, imported only where used.
"""
