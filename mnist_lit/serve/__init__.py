"""Draw a digit in the browser: a small web app over a trained network, and its HTTP API.

``app`` builds the FastAPI application around a :class:`mnist_lit.inference.runners.Runner` (the command is
:mod:`mnist_lit.cli.serve`); ``static/`` holds the page, plain HTML, CSS and JavaScript, with no build step.
FastAPI and uvicorn are an optional extra (``.[serve]``), imported only inside this package.
"""
