"""Experiments: repeating a run over seeds, summarizing and comparing the results, searching hyperparameters.

Pure logic (seed lists, statistics, summaries, search spaces, figures) and the Lightning callbacks a search trial
needs; the commands that run ``fit`` live in :mod:`mnist_lit.cli`.
"""
