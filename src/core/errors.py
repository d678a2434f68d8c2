"""Bad input that the user must fix (src.core.cli reports it: a paragraph on stderr, exit status 2)."""
from __future__ import annotations


class DataError(Exception):
    """Bad input that the user must fix; the message names the file, the row and the fix."""
