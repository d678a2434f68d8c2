"""The errors a command reports as one paragraph on stderr with exit status 2 (src.base.cli), never a
traceback, by what the user must fix."""
from __future__ import annotations


class CommandError(Exception):
    """Something the user must fix; the message names the file, row or setting, and the fix."""


class DataError(CommandError):
    """Bad input data: a table, an audio file, a fold's files. The message names the file and row."""


class UsageError(CommandError):
    """Flags or settings that contradict each other, the preset, or what was trained."""


class SetupError(CommandError):
    """The machine lacks what a command needs: a Keras backend, a GPU, optional pretrained weights."""
