"""A packed store of variable-length arrays: one flat binary file plus an index of offsets. Training
reads just the rows of a crop from it, without decoding files or loading whole clips."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

INDEX_COLUMNS = ["fname", "offset", "length", "status", "note", "source_size", "source_mtime"]


def params_key(params: dict) -> str:
    """A short stable hash of the parameters that made a cache, part of its folder name."""
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]


class PackedStore:
    """Rows of `width` values of `dtype`, one run of rows per clip, appended end to end in data.bin.

    index.csv lists fname, offset and length (in rows), status (ok / skipped) and a note, and the
    source file's size and mtime so that a changed file is redone. Only the index says what is
    finished: it is rewritten atomically after the data it points to is on disk.
    """

    def __init__(self, root: Path, dtype: str, width: int, params: dict):
        self.root = Path(root)
        self.dtype = np.dtype(dtype)
        self.width = width
        self.root.mkdir(parents=True, exist_ok=True)
        params_path = self.root / "params.json"
        if params_path.exists():
            saved = json.loads(params_path.read_text())
            if saved != params:
                raise ValueError(f"{params_path} was made with {saved}, not {params}: delete {self.root}.")
        else:
            params_path.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        self.params = params
        self.data_path = self.root / "data.bin"
        self.index_path = self.root / "index.csv"
        if self.index_path.exists():
            self.index = pd.read_csv(self.index_path, dtype={"fname": str}, keep_default_na=False)
        else:
            self.index = pd.DataFrame(columns=INDEX_COLUMNS)
        self.index = self.index.set_index("fname", drop=False)
        self._pending: list[dict] = []
        self._fd: int | None = None
        self._lookup: dict | None = None

    # --- writing ---

    def needs(self, fname: str, source: Path) -> bool:
        """True when fname is absent, or its source file changed since it was stored."""
        if fname not in self.index.index:
            return True
        row = self.index.loc[fname]
        stat = source.stat()
        return int(row.source_size) != stat.st_size or float(row.source_mtime) != stat.st_mtime

    def append(self, fname: str, rows: np.ndarray | None, source: Path, note: str = "",
               status: str = "ok") -> None:
        """Add one clip's rows (or a skip record when rows is None); visible after flush()."""
        offset = self.data_path.stat().st_size // self._row_bytes if self.data_path.exists() else 0
        length = 0
        if rows is not None:
            rows = np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1, self.width)
            with open(self.data_path, "ab") as out:
                out.write(rows.tobytes())
            length = len(rows)
        stat = source.stat()
        self._pending.append(dict(fname=fname, offset=offset, length=length, status=status, note=note,
                                  source_size=stat.st_size, source_mtime=stat.st_mtime))

    def flush(self) -> None:
        """Make appended clips durable and visible: data first, then the index, atomically."""
        if not self._pending:
            return
        if self.data_path.exists():
            with open(self.data_path, "ab") as out:
                out.flush()
                os.fsync(out.fileno())
        new = pd.DataFrame(self._pending, columns=INDEX_COLUMNS).set_index("fname", drop=False)
        self.index = pd.concat([self.index.drop(new.index, errors="ignore"), new])
        tmp = self.index_path.with_name("index.csv.tmp")
        self.index.to_csv(tmp, index=False)
        tmp.replace(self.index_path)
        self._pending = []
        self._lookup = None
        if self._fd == -1:  # the data file did not exist when a read last looked
            self._fd = None

    # --- reading ---

    @property
    def _row_bytes(self) -> int:
        return self.dtype.itemsize * self.width

    def status(self, fname: str) -> str:
        return self.index.at[fname, "status"] if fname in self.index.index else "missing"

    def length(self, fname: str) -> int:
        return self._where()[fname][1]

    def read(self, fname: str, start: int = 0, count: int | None = None) -> np.ndarray:
        """Rows [start, start + count) of the clip (all of it by default), as a new array.

        Reads with pread rather than through a memory map: mapped pages a process has touched count
        in its resident memory, so an epoch over a memory map grows RSS to the size of the cache."""
        offset, length = self._where()[fname]
        count = length - start if count is None else count
        if start < 0 or count < 0 or start + count > length:
            raise IndexError(f"rows {start}:{start + count} of {fname}, which has {length}")
        if self._fd is None:
            self._fd = os.open(self.data_path, os.O_RDONLY) if self.data_path.exists() else -1
        nbytes = count * self._row_bytes
        data = os.pread(self._fd, nbytes, (offset + start) * self._row_bytes) if nbytes else b""
        return np.frombuffer(data, self.dtype).reshape(count, self.width)

    def _where(self) -> dict:
        # A dict of (offset, length): a pandas lookup per clip would cost more than reading it.
        if self._lookup is None:
            self._lookup = dict(zip(self.index.fname, zip(self.index.offset.astype(int),
                                                          self.index.length.astype(int))))
        return self._lookup

    def __getstate__(self):
        # File descriptors and lookups are made anew in each worker process rather than pickled.
        return dict(self.__dict__, _fd=None, _lookup=None)

    def __del__(self):
        if getattr(self, "_fd", None) not in (None, -1):
            os.close(self._fd)


@contextmanager
def locked(folder: Path):
    """Hold an exclusive lock on folder while building, so parallel fold processes cannot race."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
