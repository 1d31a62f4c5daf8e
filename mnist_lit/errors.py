"""One base class for what the user got wrong, so that every command reports it as one message, not a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave: a file, an option, a checkpoint, the data.

    Its message names the file or option and says what to do; the command line prints it and exits with 1.
    """


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, of another network, or does not fit the run it is given to."""
