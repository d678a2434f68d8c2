"""Files written whole or not at all, and one writer at a time.

Every writer of the project goes through `atomic_path` / `atomic_write` (folders: `atomic_folder`): the
bytes go to a temporary file with a unique name in the target's folder, are flushed and fsynced, then
renamed over the target, and the folder is fsynced. A kill or a power cut leaves the old file or the new
one, never a mix or an empty "finished" file; two writers of one path never share a temporary file; a
write that fails (a full disk, a read-only folder) removes its temporary file and raises a WriteError
naming the target. `Lock` is git's index.lock: a file made with O_CREAT|O_EXCL that names its holder.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import CommandError, UsageError

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class WriteError(CommandError):
    """A file could not be written (full disk, quota, file size limit, read-only or missing folder)."""

    def __init__(self, path: Path, error: OSError, needed: int | None = None, kept: str | None = None):
        self.path, self.error, self.needed = Path(path), error, needed
        reason = error.strerror or str(error)
        size = f" (it needed about {_size(needed)})" if needed else ""
        room = f" {_what_to_do(Path(path), error.errno)}" if error.errno in FULL else ""
        kept = kept or ("Nothing was left half-written: every file is written whole or not at all, and what "
                        "was finished before is kept.")
        super().__init__(f"could not write {path}: {reason}{size}.{room} {kept}")


def _size(count: int) -> str:
    """A byte count for people: 812 bytes, 3.4 kB, 1.2 MB, 4.0 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _what_to_do(path: Path, code: int) -> str:
    """For a write that failed for want of room: which disk (its mount point and what is free on it), or
    which limit (the process's file size limit, read back), and what to do."""
    if code == errno.EFBIG:
        try:
            import resource

            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            unlimited = limit == resource.RLIM_INFINITY
        except (ImportError, OSError, ValueError):
            limit, unlimited = None, True
        if not unlimited:
            return (f"This process may not write a file larger than {limit} bytes ({_size(limit)}): its file size "
                    f"limit (`ulimit -f`, in 1024-byte blocks, in the shell that started it; a batch system's "
                    f"limit). Raise it (`ulimit -f unlimited`) or write elsewhere, then run the same command again.")
        return ("The file system there takes no file this large (FAT32 stops at 4 GB): choose a folder on another "
                "file system, then run the same command again.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    mount = folder.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    if code == errno.EDQUOT:
        return (f"Your disk quota on the disk mounted at {mount} is used up: delete files of yours there (or choose "
                f"a folder on another disk), then run the same command again.")
    try:
        free = f" ({_size(shutil.disk_usage(folder).free)} free)"
    except OSError:
        free = ""
    return (f"The disk mounted at {mount}{free} is full: make room there (or choose a folder on another disk), then "
            f"run the same command again.")


def _crash_point(stage: str, path: Path) -> None:
    """Fault injection for the tests (tests/test_faults.py): with SRC_CRASH_AT=NAME:STAGE:N, the N-th
    atomic write of a file called NAME kills this process (SIGKILL) at STAGE: written (temporary file
    complete, not yet fsynced), synced (before the rename) or renamed (before the folder's fsync); and
    the N-th folder built by atomic_folder at `built` (complete, before it takes the old one's place)."""
    spec = os.environ.get("SRC_CRASH_AT")
    if not spec:
        return
    name, at, count = spec.rsplit(":", 2)
    if Path(path).name != name or at != stage:
        return
    seen = _crash_counts[stage] = _crash_counts.get(stage, 0) + 1
    if seen == int(count):
        os.kill(os.getpid(), signal.SIGKILL)


_crash_counts: dict[str, int] = {}


def irregular(path: Path) -> str | None:
    """What a path is when it is not a regular file (a FIFO, a device, a socket, a folder), else None:
    opening a FIFO would wait forever, so no reader opens one."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                                         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                                         (stat.S_ISDIR, "a folder")) if test(mode)), "not a regular file")


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
    is fsynced and renamed over `path`, on failure removed (a WriteError names `path`). `suffix` keeps a
    file type some writers need (".npz", ".keras")."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    except OSError as error:
        raise WriteError(path, error) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _crash_point("written", path)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _crash_point("synced", path)
        tmp.replace(path)
        _crash_point("renamed", path)
        fsync_folder(path.parent)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, error) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, write: Callable[[IO], None] | bytes | str) -> None:
    """Write `path` whole or not at all: `write` is the content (bytes or text) or a function that writes
    to an open binary file."""
    content = write.encode() if isinstance(write, str) else write
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            if isinstance(content, bytes | bytearray | memoryview):
                handle.write(content)
            else:
                content(handle)
            handle.flush()
    except WriteError as error:
        if isinstance(content, bytes | bytearray | memoryview):
            error.__init__(error.path, error.error, len(content))
        raise


def atomic_write_json(path: Path, value) -> None:
    atomic_write(path, json.dumps(value, indent=2) + "\n")


def atomic_write_csv(table, path: Path, **kwargs) -> None:
    """A pandas table as CSV (index left out), written whole or not at all."""
    atomic_write(path, lambda handle: table.to_csv(handle, index=False, **kwargs))


@contextmanager
def atomic_folder(path: Path):
    """A temporary sibling folder to build `path` in; on success it takes `path`'s place in one step
    (Linux's renameat2 exchange: the previous folder stays until the new one is there), on failure it is
    removed and the previous folder stays as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as error:
        raise WriteError(path, error) from None
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                fd = os.open(file, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
        _crash_point("built", path)
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # now the previous folder
        else:
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            if path.exists():  # no atomic exchange here: a kill between these renames leaves `old`
                path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        fsync_folder(path.parent)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(path, error) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 with RENAME_EXCHANGE); False where the system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), exchange) == 0


class Locked(UsageError):
    """Another process holds the lock: the message names it."""


class Lock:
    """One writer at a time: a lock file made with O_CREAT|O_EXCL that names its holder (host, PID, what
    it does, since when). A second taker stops at once with a Locked error naming the holder; a lock left
    by a process that is gone (on this host) is taken over with a note. `pid` is the holder to record,
    this process by default (run_folds.sh records its shell)."""

    def __init__(self, path: Path, what: str, pid: int | None = None):
        self.path, self.what, self.pid = Path(path), what, pid or os.getpid()
        self.note = None  # set when a stale lock was taken over

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> Lock:
        record = {"host": socket.gethostname(), "pid": self.pid, "what": self.what,
                  "since": datetime.datetime.now().isoformat(timespec="seconds")}
        for _attempt in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.holder()
                if held is None or (held.get("host") == record["host"] and not _alive(held.get("pid"))):
                    who = "an unreadable lock" if held is None else f"pid {held.get('pid')}, which is gone"
                    self.note = f"took over {self.path} from {who}"
                    self.path.unlink(missing_ok=True)
                    continue
                if held.get("host") == record["host"] and held.get("pid") == self.pid:
                    return self  # this very process (or the shell that started it) holds it already
                raise Locked(f"{self.path.parent} is in use: {held.get('what', 'another process')} holds "
                             f"{self.path} (pid {held.get('pid')} on {held.get('host')}, since "
                             f"{held.get('since')}). Wait for it to finish or stop it; if that process is "
                             f"gone, delete {self.path}.") from None
            except OSError as error:
                raise WriteError(self.path, error) from None
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(json.dumps(record) + "\n")
            except OSError as error:  # a full disk: no empty lock left behind
                self.path.unlink(missing_ok=True)
                raise WriteError(self.path, error) from None
            self.owned = True
            return self
        raise Locked(f"could not take {self.path}: another process keeps taking it")

    def release(self) -> None:
        held = self.holder()
        if getattr(self, "owned", False) and held and held.get("pid") == self.pid:
            self.path.unlink(missing_ok=True)
        self.owned = False

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid) -> bool:
    """A process with this PID runs on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True
