"""The sections of ``benchmarks/bench.py``, one module each; every module exposes the one function the runner calls."""
