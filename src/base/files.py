"""Files written whole or not at all: every writer of the project goes through `atomic_write`.

The bytes go to a temporary file with a unique name in the target's folder, are flushed and fsynced,
then renamed over the target, and the folder is fsynced: a kill or a power cut leaves the old file or
the new one, never a mix or an empty "finished" file, and two writers of one path never share a
temporary file (the last rename wins, whole)."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, suffix: str = ""):
    """A unique temporary path beside `path` to write by any means (numpy, Keras, pandas); on success it
    is fsynced and renamed over `path`, on failure removed. `suffix` keeps a file type some writers need
    (".npz", ".keras")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write(path: Path, write: Callable[[IO], None] | bytes | str) -> None:
    """Write `path` whole or not at all: `write` is the content (bytes or text) or a function that writes
    to an open binary file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if isinstance(write, str):
            handle.write(write.encode())
        elif isinstance(write, bytes | bytearray | memoryview):
            handle.write(write)
        else:
            write(handle)
        handle.flush()


def atomic_write_json(path: Path, value) -> None:
    atomic_write(path, json.dumps(value, indent=2) + "\n")


def atomic_write_csv(table, path: Path, **kwargs) -> None:
    """A pandas table as CSV (index left out), written whole or not at all."""
    atomic_write(path, lambda handle: table.to_csv(handle, index=False, **kwargs))
