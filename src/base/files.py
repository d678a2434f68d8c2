"""Files written whole or not at all, and one writer at a time.

Every writer of the project goes through `atomic_path` / `atomic_write` (folders: `atomic_folder`): the
bytes go to a temporary file with a unique name in the target's folder, are flushed and fsynced, then
renamed over the target, and the folder is fsynced. A kill or a power cut leaves the old file or the new
one, never a mix or an empty "finished" file; two writers of one path never share a temporary file; a
write that fails (a full disk, a read-only folder) removes its temporary file and raises a WriteError
naming the target. Files get the modes of the user's umask (0666 & ~umask, folders 0777 & ~umask), as
files written directly would, so a cluster's shared storage sees the usual modes. `Lock` is held by the
kernel (an flock on the lock file, let go of when its holder ends, SIGKILL included); the file also names
the holder, for the message a second taker stops with.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
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
        _chmod(tmp, usual_mode())  # mkstemp made it 0600; the writer may have made it anew
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
    removed and the previous folder stays as it was. A success also removes what killed builds of `path`
    left beside it, but not the folder of a build still running (each holds an flock on its own)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        _chmod(tmp, usual_mode(folder=True))  # mkdtemp made it 0700
    except OSError as error:
        raise WriteError(path, error) from None
    building = _hold(tmp)  # while this process lives, the next build of `path` leaves the folder alone
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
        _clear_leftovers(path)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(path, error) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if building is not None:
            os.close(building)


def _hold(folder: Path) -> int | None:
    """An flock on a folder being built, held until its descriptor is closed (or its builder dies); None
    where the file system takes no flock on a folder (then its leftovers are never cleared)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _clear_leftovers(path: Path) -> None:
    """Remove what killed builds of `path` left beside it (mkdtemp's `.NAME.XXXXXXXX.tmp`, a swap's
    `.NAME.old-PID`), but not a folder a live builder still holds (_hold)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:[a-z0-9_]{{8}}\.tmp|old-\d+)")
    try:
        found = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and not p.is_symlink() and p.is_dir()]
    except OSError:  # tidying only: the build itself is done
        return
    for leftover in found:
        fd = _hold(leftover)
        if fd is not None:
            try:
                shutil.rmtree(leftover, ignore_errors=True)
            finally:
                os.close(fd)


def _umask() -> int:
    """This process's umask: read from /proc where Linux has it (setting it to read it would change the
    mode of files other threads make meanwhile), else set and restored."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod(path: Path, mode: int) -> None:
    """Set a mode where the file system keeps modes (FAT and some network mounts refuse: the file is
    written all the same)."""
    try:
        os.chmod(path, mode)
    except PermissionError:
        pass


def usual_mode(folder: bool = False) -> int:
    """The mode a file (or folder) made directly gets, 0666 (0777) less the umask: what files written
    through a temporary name get too, instead of mkstemp's 0600 and mkdtemp's 0700."""
    return (0o777 if folder else 0o666) & ~_umask()


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
    """One holder at a time, kept by the kernel: an exclusive flock on the lock file, which the kernel lets
    go of when its holder ends, however it ends (SIGKILL included). The file also names the holder (host,
    PID, what it does, since when): a second taker stops at once with a Locked error naming it; a taker
    finding a file that names a holder that no longer holds it (a killed run) takes it with a note. `pid`
    is the process the lock is for, this one by default; for another one (run_folds.sh's shell, through
    `python -m src.training.runs lock`, which exits at once) a keeper process holds the lock until that
    process ends.

    A holder removes the file before letting go, and a taker holds the lock only if the file it locked is
    still the one at the path; so never delete a lock file by hand: its holder would keep holding a file no
    one else sees, and the next taker would lock a new one."""

    SETTLE = 2.0
    """seconds a taker waits for a holder that has not named itself yet, or whose process just ended"""

    def __init__(self, path: Path, what: str, pid: int | None = None):
        self.path, self.what, self.pid = Path(path), what, pid or os.getpid()
        self.note = None  # set when a lock its holder no longer held was taken over
        self._fd = self._file = self._keeper = None

    def holder(self) -> dict | None:
        """The holder the file names (host, pid, what, since), or None when it names none."""
        try:
            return _record(self.path.read_bytes())
        except OSError:
            return None

    def acquire(self) -> Lock:
        host = socket.gethostname()
        patience = time.monotonic() + self.SETTLE
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # never O_TRUNC: it names the holder
            except OSError as error:
                raise WriteError(self.path, error) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = _record(os.pread(fd, 4096, 0))
                os.close(fd)
                if held and held.get("host") == host and held.get("pid") == self.pid:
                    return self  # this very process (or the shell that started it) holds it already
                # A holder names itself just after taking the lock, and a keeper lets go just after its
                # process ends: give either a moment before stopping.
                settling = held is None or (held.get("host") == host and not _alive(held.get("pid")))
                if settling and time.monotonic() < patience:
                    time.sleep(0.05)
                    continue
                raise Locked(self._held_message(held)) from None
            except OSError as error:  # a file system without locks (ENOLCK)
                os.close(fd)
                raise WriteError(self.path, error) from None
            if _identity(fd) != _at(self.path):  # its last holder removed it while letting go: start again
                os.close(fd)
                continue
            break
        self._fd, self._file = fd, _identity(fd)
        previous, size = _record(os.pread(fd, 4096, 0)), os.fstat(fd).st_size
        if previous:
            gone = previous.get("host") == host and not _alive(previous.get("pid"))
            self.note = f"took over {self.path} from " + (
                f"pid {previous.get('pid')}, which is gone" if gone else
                f"pid {previous.get('pid')} on {previous.get('host')} ({previous.get('what')}), which no longer "
                f"holds it")
        elif size:
            self.note = f"took over {self.path} from an unreadable lock file"
        record = {"host": host, "pid": self.pid, "what": self.what,
                  "since": datetime.datetime.now().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as error:  # a full disk: let go, and no empty lock file left behind
            self.release()
            raise WriteError(self.path, error) from None
        if self.pid != os.getpid():
            self._keep()
        return self

    def _held_message(self, held: dict | None) -> str:
        if held is None:
            return (f"{self.path.parent} is in use: another process holds {self.path} and has not named itself. "
                    f"Wait for it to finish, then run the same command again.")
        pid, host = held.get("pid"), held.get("host")
        since = f", since {held['since']}" if held.get("since") else ""
        who = f"{held.get('what', 'another process')} holds {self.path} (pid {pid} on {host}{since})"
        if host == socket.gethostname() and not _alive(pid):
            return (f"{self.path.parent} is in use: {who}; that process is gone, but a process it started still "
                    f"holds the lock (the kernel lets go of it when the last one ends). Stop that process "
                    f"(`fuser -v {self.path}` names it), then run the same command again.")
        where = "" if host == socket.gethostname() else f" on {host}"
        return (f"{self.path.parent} is in use: {who}. Wait for it to finish, or stop it (kill {pid}{where}): the "
                f"lock is let go of when that process ends, killed or not, and the same command then runs.")

    def _keep(self) -> None:
        """Hand the lock to a child process that holds it until process `pid` ends (this process, taking it
        for run_folds.sh's shell, exits at once, and its flock would go with it)."""
        fd, self._fd = self._fd, None
        try:
            watch = os.pidfd_open(self.pid)  # readable once the process ends; no PID reuse to fear
        except ProcessLookupError:  # gone already: nothing to hold the lock for
            self._fd = fd
            self.release()
            return
        except (AttributeError, OSError):  # no pidfd (macOS, Linux before 5.3): poll
            watch = None
        sys.stdout.flush()
        sys.stderr.flush()
        child = os.fork()
        if child == 0:  # the keeper: its own session (no Ctrl-C of the terminal), nothing else held open
            try:
                os.setsid()
                null = os.open(os.devnull, os.O_RDWR)
                for std in range(3):
                    os.dup2(null, std)
                for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
                    if int(name) not in (0, 1, 2, fd, watch):
                        try:
                            os.close(int(name))
                        except OSError:
                            pass
                if watch is not None:
                    select.select([watch], [], [])
                else:
                    while _alive(self.pid):
                        time.sleep(0.2)
                if _identity(fd) == _at(self.path):
                    self.path.unlink(missing_ok=True)
            finally:
                os._exit(0)
        os.close(fd)  # the keeper's copy holds the flock now
        if watch is not None:
            os.close(watch)
        self._keeper = child

    def release(self) -> None:
        """Let go of the lock, its file removed first (see the class's note); nothing if not held."""
        if self._file is not None and _at(self.path) == self._file:
            self.path.unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
        if self._keeper is not None:
            try:
                os.kill(self._keeper, signal.SIGKILL)
                os.waitpid(self._keeper, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self._fd = self._file = self._keeper = None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _record(data: bytes) -> dict | None:
    """A lock file's record of its holder, or None (empty: its holder has not written it yet)."""
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _at(path: Path) -> tuple[int, int] | None:
    """The identity of the file at `path` now, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _alive(pid) -> bool:
    """A process with this PID runs on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True
