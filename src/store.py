"""A packed store of variable-length arrays: one flat binary file read through a memory map, plus an
index of offsets. Training reads crops from it without decoding or loading whole files."""
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
        self._map = None

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
        self._map = None

    # --- reading ---

    @property
    def _row_bytes(self) -> int:
        return self.dtype.itemsize * self.width

    def status(self, fname: str) -> str:
        return self.index.at[fname, "status"] if fname in self.index.index else "missing"

    def length(self, fname: str) -> int:
        return int(self.index.at[fname, "length"])

    def read(self, fname: str) -> np.ndarray:
        """The clip's rows (length x width), a read-only view into the memory map."""
        if self._map is None:
            if not self.data_path.exists() or self.data_path.stat().st_size == 0:
                self._map = np.zeros((0, self.width), self.dtype)
            else:
                self._map = np.memmap(self.data_path, dtype=self.dtype, mode="r").reshape(-1, self.width)
        row = self.index.loc[fname]
        return self._map[int(row.offset): int(row.offset) + int(row.length)]

    def __getstate__(self):
        # Memory maps are reopened in each worker process rather than pickled.
        state = dict(self.__dict__)
        state["_map"] = None
        return state


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
