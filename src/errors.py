"""Bad input that the user must fix, and how every command reports it."""
from __future__ import annotations

import functools
import sys


class DataError(Exception):
    """Bad input that the user must fix; the message names the file, the row and the fix."""


def reports_data_errors(main):
    """Wrap a command's main: a DataError becomes its message on stderr and exit status 2."""
    @functools.wraps(main)
    def run(argv=None) -> int:
        try:
            return main(argv)
        except DataError as error:
            print(error, file=sys.stderr)
            return 2
    return run
