"""Networks in and out of mnist_lit: Keras weights (:mod:`.keras`) and ONNX export (:mod:`.onnx`), as functions the
``import-keras`` and ``export`` commands (:mod:`mnist_lit.cli.import_keras`, :mod:`mnist_lit.cli.export`) call.

Nothing here is imported by ``fit``: h5py, Keras, ONNX and ONNX Runtime are optional extras, imported only where used.
"""
