"""The command-line skeleton every stage and tool shares: a parser made from the module's docstring
with the path flags, logging set up once, and one error style for what the user must fix (a paragraph naming
the file, row or setting and the fix on stderr, exit status 2)."""
from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

from .errors import CommandError
from .layout import Paths

LOG_FORMAT = dict(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


def parser(prog: str, doc: str, data_dir: bool = True, out_dir: bool = True) -> argparse.ArgumentParser:
    """A command's parser: its module docstring's first paragraph as the description, the rest (usage
    examples) after the options; `--data-dir` and `--out-dir` unless the command has no use for them."""
    summary, _, details = doc.strip().partition("\n\n")
    made = argparse.ArgumentParser(prog=prog, description=summary, epilog=details or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    if data_dir:
        made.add_argument("--data-dir", type=Path, default=Path("data"),
                          help="dataset in the competition layout (default: data)")
    if out_dir:
        made.add_argument("--out-dir", type=Path, default=Path("."),
                          help="root of everything the command writes: predictions/, submissions/, ... "
                               "(default: .)")
    return made


def paths(args: argparse.Namespace) -> Paths:
    return Paths(getattr(args, "data_dir", Path("data")), getattr(args, "out_dir", Path(".")))


def command(main):
    """A command's main: logging set up once, and a CommandError (bad data, bad usage, a missing piece of
    setup) reported as its message on stderr with exit status 2 (never a traceback)."""
    @functools.wraps(main)
    def run(argv=None) -> int:
        if not logging.getLogger().handlers:
            logging.basicConfig(**LOG_FORMAT)
        try:
            return main(argv)
        except CommandError as error:
            print(error, file=sys.stderr)
            return 2
        except OSError as error:  # a file the command could not read or write, outside the atomic writers
            where = error.filename or "a file"
            print(f"could not read or write {where}: {error.strerror or error}. Check the path and its "
                  f"permissions, and the room left on its disk.", file=sys.stderr)
            return 2
    return run
