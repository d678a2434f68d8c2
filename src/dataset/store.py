"""A packed store of variable-length arrays: one flat binary file plus an index of offsets. Training
reads just the rows of a crop from it, without decoding files or loading whole clips."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..base.errors import DataError
from ..base.files import atomic_folder, atomic_write, atomic_write_csv

log = logging.getLogger(__name__)

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
            try:
                saved = json.loads(params_path.read_text())
            except ValueError:
                raise DataError(f"{params_path} is damaged (not JSON): the cache in {self.root} cannot be trusted. "
                                f"Delete that folder; the next run rebuilds it.") from None
            if saved != params:
                raise DataError(f"{params_path} was made with {saved}, not {params}: the cache in {self.root} "
                                f"belongs to other settings. Delete that folder; the next run rebuilds it.")
        else:
            atomic_write(params_path, json.dumps(params, indent=2, sort_keys=True) + "\n")
        self.params = params
        self.data_path = self.root / "data.bin"
        self.index_path = self.root / "index.csv"
        if self.index_path.exists():
            self.index = pd.read_csv(self.index_path, dtype={"fname": str}, keep_default_na=False)
        else:
            self.index = pd.DataFrame(columns=INDEX_COLUMNS)
        self.index = self.index.set_index("fname", drop=False)
        self._pending: list[dict] = []
        self._end: int | None = None  # rows in the data file, reservations included
        self._fd: int | None = None
        self._lookup: dict | None = None
        self._sources: dict | None = None

    # --- writing ---

    def needs(self, fname: str, source: Path) -> bool:
        """True when fname is absent, or its source file changed since it was stored."""
        if self._sources is None:
            self._sources = dict(zip(self.index.fname, zip(self.index.source_size.astype(int),
                                                           self.index.source_mtime.astype(float))))
        stat = source.stat()
        return self._sources.get(fname) != (stat.st_size, stat.st_mtime)

    def reserve(self, rows: int) -> int:
        """Set aside `rows` rows at the end of the data file; returns their offset (in rows). Workers
        fill reservations with write_rows, so clips need not pass through this process."""
        if self._end is None:
            self._end = self.data_path.stat().st_size // self._row_bytes if self.data_path.exists() else 0
        offset = self._end
        self._end += rows
        return offset

    def append(self, fname: str, rows: np.ndarray | None, source: Path, note: str = "",
               status: str = "ok") -> None:
        """Add one clip's rows (or a skip record when rows is None); visible after flush()."""
        rows = None if rows is None else np.asarray(rows, dtype=self.dtype).reshape(-1, self.width)
        offset = self.reserve(0 if rows is None else len(rows))
        if rows is not None:
            write_rows(self.data_path, offset * self._row_bytes, rows)
        self.record(fname, offset, 0 if rows is None else len(rows), source, note, status)

    def record(self, fname: str, offset: int, length: int, source: Path, note: str = "",
               status: str = "ok") -> None:
        """Index a clip whose rows are written at `offset`; visible after flush()."""
        stat = source.stat()
        self._pending.append(dict(fname=fname, offset=offset, length=length, status=status, note=note,
                                  source_size=stat.st_size, source_mtime=stat.st_mtime))

    def flush(self) -> None:
        """Make recorded clips durable and visible: data first, then the index, atomically."""
        if not self._pending:
            return
        if self.data_path.exists():
            fd = os.open(self.data_path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        new = pd.DataFrame(self._pending, columns=INDEX_COLUMNS).set_index("fname", drop=False)
        self.index = pd.concat([self.index.drop(new.index, errors="ignore"), new])
        atomic_write_csv(self.index, self.index_path)
        self._pending = []
        self._lookup = self._sources = None
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

    def orphaned_share(self) -> float:
        """The share of data.bin no indexed clip uses: rows of builds killed before their index was
        written, and old rows of clips that changed."""
        size = self.data_path.stat().st_size if self.data_path.exists() else 0
        used = int(self.index.length.astype(int).sum()) * self._row_bytes
        return (size - used) / size if size else 0.0

    def __getstate__(self):
        # File descriptors and lookups are made anew in each worker process rather than pickled.
        return dict(self.__dict__, _fd=None, _lookup=None, _sources=None)

    def __del__(self, _close=os.close):  # bound now: at interpreter exit the os global may be gone
        if getattr(self, "_fd", None) not in (None, -1):
            _close(self._fd)


# A store whose data file is more than this share orphaned rows is rewritten by the next build.
COMPACT_ABOVE = 0.10


def compacted(store: PackedStore, threshold: float = COMPACT_ABOVE) -> PackedStore:
    """The store, rewritten without orphaned rows when they take more than `threshold` of its data file
    (else as it is). The copy is built beside it and swapped in whole (base.files.atomic_folder): a kill
    leaves the old store or the new one. Call it holding the cache's lock."""
    share = store.orphaned_share()
    if share <= threshold:
        return store
    with atomic_folder(store.root) as building:
        for name in ("params.json", "report.csv"):
            if (store.root / name).exists():
                (building / name).write_bytes((store.root / name).read_bytes())
        fresh = PackedStore(building, store.dtype.str, store.width, store.params)
        for fname, status, note, size, mtime in zip(store.index.fname, store.index.status, store.index.note,
                                                    store.index.source_size, store.index.source_mtime):
            rows = store.read(fname) if status == "ok" else None
            offset = fresh.reserve(0 if rows is None else len(rows))
            if rows is not None:
                write_rows(fresh.data_path, offset * fresh._row_bytes, rows)
            fresh._pending.append(dict(fname=fname, offset=offset, length=0 if rows is None else len(rows),
                                       status=status, note=note, source_size=size, source_mtime=mtime))
        fresh.flush()
    log.info("compacted %s: %.0f%% of its data file was rows of interrupted or superseded builds", store.root,
             100 * share)
    return PackedStore(store.root, store.dtype.str, store.width, store.params)


def derive(store: PackedStore, source: PackedStore, folder: Path, compute, desc: str,
           chunk: int = 256) -> PackedStore:
    """Bring `store`, made from `source` clip by clip (features, embeddings), up to date and return it:
    every clip that is new, changed, or whose status changed in `source`. `compute(fnames)` gives the rows
    of each decodable clip, in order; clips `source` skipped are recorded as skipped. Flushed every `chunk`
    clips, so an interrupted build keeps what it made (and the next one compacts what it left)."""
    store = compacted(store)
    todo = [f for f in source.index.fname if store.needs(f, folder / f) or store.status(f) != source.status(f)]
    with tqdm(total=len(todo), unit="clip", desc=desc, disable=None if todo else True) as bar:
        for first in range(0, len(todo), chunk):
            part = todo[first:first + chunk]
            made = iter(compute([f for f in part if source.status(f) == "ok"]))
            for fname in part:
                if source.status(fname) == "ok":
                    store.append(fname, next(made), folder / fname)
                else:
                    store.append(fname, None, folder / fname, status="skipped", note=source.index.at[fname, "note"])
            store.flush()
            bar.update(len(part))
    return store


def write_rows(path: Path, byte_offset: int, rows: np.ndarray) -> None:
    """Write rows at a byte offset of a data file (creating it), from any process."""
    data = memoryview(np.ascontiguousarray(rows).tobytes())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while data:  # pwrite may write less than asked
                written = os.pwrite(fd, data, byte_offset)
                data, byte_offset = data[written:], byte_offset + written
        finally:
            os.close(fd)
    except OSError as error:  # pwrite's error names no file: name it (a full disk, a size limit)
        raise OSError(error.errno, error.strerror, str(path)) from None


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
