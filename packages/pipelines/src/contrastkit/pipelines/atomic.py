"""Atomic file writes: every file a run leaves behind is either the old one or the whole new one.

The one helper that checkpoints, configs, metrics, plots, reports and the feature cache write with.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, fsync: bool = False) -> Path:
    """Call `write(tmp)` on a hidden temporary path beside `path`, then rename it onto `path`.

    The rename is atomic (same folder), so a reader or a crash sees the old file or the new one,
    never a half-written one. The temporary name is unique per process and call, and the file
    is created by `write` itself, so it gets the usual umask permissions (mkstemp would give
    0600). fsync: flush the file to disk before the rename (checkpoints, which must survive a
    power cut). The parent folder is created if needed; on any error the temporary is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# Text files a run leaves (config.yaml, metrics.csv, reports) are for everyone to read: asked
# for explicitly, so the mode never depends on how the temporary was made. The umask still
# applies (0644 under the usual 022; a user's stricter 077 gives 0600).
TEXT_FILE_MODE = 0o644


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write `text` (UTF-8, newlines as given) to `path` atomically, mode TEXT_FILE_MODE less the
    umask (0644 under the usual umask 022)."""

    def write(tmp: Path) -> None:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, TEXT_FILE_MODE)
        with open(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    return atomic_write(path, write, fsync=fsync)


def save_torch_atomic(obj: Any, path: str | Path, *, fsync: bool = False) -> Path:
    """`torch.save(obj)` to `path` atomically."""
    import torch  # here, so the text writers do not need torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp), fsync=fsync)
