"""One writer per run directory: the main process holds an exclusive lock on `run_dir/.lock` for the
run's whole life, so a second run into the same folder stops at once instead of writing beside it.

The lock is `fcntl.flock` on the file (the kernel frees it when the process ends, however it ends);
the file's content says who holds it (pid, host, start time, command). A lock file that is not
locked but names a PID was left by a run that was killed (kill -9, power cut): it is taken over
with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch.distributed as dist

from contrastkit.pipelines.preflight import PathProblem, check_writable_dir, describe_os_error
from contrastkit.pipelines.run_files import LOCK_FILE

try:
    import fcntl
except ImportError:  # Windows: the lock file is written and removed, but nothing enforces it
    fcntl = None  # type: ignore[assignment]

# flock errors that mean "this file system cannot lock", not "someone holds the lock".
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLocked(ValueError):
    """Another live run holds the run directory's lock; the message names its PID and host."""


class RunLock:
    """The exclusive lock of one run directory (`acquire` ... `release`, or a `with` block).

    Locks are per open file, not per process: two RunLocks on one folder exclude each other even
    inside one process.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunLocked naming the run that holds it.

        Writes this process's pid, host, start time and command into the lock file; warns (one
        line on stderr) when it takes over a lock file a dead run left behind.
        """
        for _ in range(20):
            fd = self._open()
            if not self._lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise RunLocked(self._in_use(holder))
            # The holder we waited for may have unlinked the file (release) between our open and
            # our lock, and another run may have created a new one: we must hold the file that
            # is at the path now.
            if not _is_file_at(fd, self.path):
                os.close(fd)
                continue
            previous = _read_holder(fd)
            if previous.get("pid") is not None:
                print(
                    f"warning: taking over the lock of output dir {str(self.run_dir)!r} from "
                    f"{_describe(previous)}, which is no longer running",
                    file=sys.stderr,
                    flush=True,
                )
            _write_holder(fd)
            self._fd = fd
            return self
        raise RunLocked(
            f"output dir {str(self.run_dir)!r}: its lock file {str(self.path)!r} keeps being "
            "replaced by other runs; make sure only one run uses this folder"
        )

    def release(self) -> None:
        """Remove the lock file (while still holding it) and free the lock. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _is_file_at(fd, self.path):  # not if someone deleted ours and made a new one
                self.path.unlink()
        except OSError:
            pass  # the kernel frees the lock anyway; a stale file is taken over next time
        finally:
            os.close(fd)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise PathProblem(
                f"cannot create the run lock {str(self.path)!r}: {describe_os_error(error)}"
            ) from None

    def _lock(self, fd: int) -> bool:
        """Try to lock `fd` without waiting: False when another open file holds it."""
        if fcntl is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            print(
                f"warning: the file system of {str(self.run_dir)!r} cannot lock files "
                f"({describe_os_error(error)}); nothing stops a second run from writing into it",
                file=sys.stderr,
                flush=True,
            )
        return True

    def _in_use(self, holder: dict[str, Any]) -> str:
        shown = f"output dir {str(self.run_dir)!r} is in use by another run"
        pid = holder.get("pid")
        if pid is None:  # it has locked the file but not written its details yet
            return f"{shown} (it holds {str(self.path)!r}); wait for it or stop it"
        elsewhere = holder.get("host") not in (None, socket.gethostname())
        where = f" on {holder['host']}" if elsewhere else ""
        return f"{shown} ({_describe(holder)}); wait for it or stop it (kill {pid}{where})"


def _describe(holder: dict[str, Any]) -> str:
    """A lock file's content as "PID 123 on host, started 2025-01-01T12:00:00"."""
    parts = [f"PID {holder.get('pid')}"]
    if holder.get("host"):
        parts[0] += f" on {holder['host']}"
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    return ", ".join(parts)


def _is_file_at(fd: int, path: Path) -> bool:
    """True when the open file `fd` is the file at `path` (same device and inode)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)


def _read_holder(fd: int) -> dict[str, Any]:
    """The lock file's content ({} when empty or not ours: never an error)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        holder = json.loads(raw.decode()) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(fd: int) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": shlex.join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder, indent=2) + "\n").encode())


@contextlib.contextmanager
def hold_run_dir(run_dir: Path, *, is_main: bool, world_size: int) -> Iterator[RunLock | None]:
    """The run's hold on its output dir, for the block: every process checks that `run_dir` is a
    writable folder (creating it), the main process takes the run lock (released when the block
    ends; a folder this call created is removed again when the block fails and left it empty).
    When any process fails, every process raises the same error (PathProblem / RunLocked, both
    ValueErrors), so no rank goes on alone. Yields the main process's lock."""
    lock: RunLock | None = None
    failure: ValueError | None = None
    created = not run_dir.exists()
    try:
        check_writable_dir(run_dir)
        if is_main:
            lock = RunLock(run_dir).acquire()
    except ValueError as error:
        failure = error
    if world_size > 1:
        failures: list[ValueError | None] = [None] * world_size
        dist.all_gather_object(failures, failure)
        failure = next((f for f in failures if f is not None), None)
    if failure is not None:
        if lock is not None:
            lock.release()
        raise failure
    try:
        yield lock
    except BaseException:
        if lock is not None:
            lock.release()
            lock = None
        if created and is_main:
            # A run that failed before writing anything leaves no empty folder behind.
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    finally:
        if lock is not None:
            lock.release()
