"""Pre-flight checks on the paths a command writes to: run before anything heavy starts, so a bad
path is one line naming it (exit status 2), never an OSError traceback minutes into a run."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path


class PathProblem(ValueError):
    """A path a command needs cannot be used; the message names the path and what to fix."""


def check_writable_dir(path: str | Path, what: str = "output dir") -> Path:
    """Make sure `path` is a folder this process can create files in; create it (and its parents)
    when missing. Returns it as a Path.

    Raises PathProblem (a ValueError) naming `what` and the path when it is a file, lies inside a
    file, or cannot be created or written (read-only folder or file system, no permission, disk
    full). The check writes and removes one empty hidden file.
    """
    path = Path(path).expanduser()
    shown = f"{what} {str(path)!r}"
    if path.exists() and not path.is_dir():
        raise PathProblem(f"{shown} is a file, not a folder; choose another path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PathProblem(
                    f"{shown} cannot be created: {str(parent)!r} is a file, not a folder"
                )
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PathProblem(f"{shown} cannot be created: {describe_os_error(error)}") from None
    probe = path / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch(exist_ok=False)
    except OSError as error:
        raise PathProblem(f"{shown} is not writable: {describe_os_error(error)}") from None
    probe.unlink(missing_ok=True)
    return path


def is_writable_dir(path: str | Path) -> bool:
    """True when `path` is an existing folder this process can create files in (nothing created
    when it is not)."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        check_writable_dir(path)
    except PathProblem:
        return False
    return True


def describe_os_error(error: OSError) -> str:
    """One line for an OSError: its reason and the path(s) it names, e.g.
    "permission denied: '/data/run'" (never a traceback)."""
    reason = error.strerror or (errno.errorcode.get(error.errno or 0) if error.errno else None)
    reason = (reason or type(error).__name__).lower()
    names = [str(n) for n in (error.filename, error.filename2) if n is not None]
    return f"{reason}: " + " -> ".join(repr(n) for n in names) if names else reason
