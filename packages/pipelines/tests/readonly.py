"""A folder nothing can be written into, even by root (tests run as root on CI)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _writable(path: Path) -> bool:
    probe = path / f".probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """Make the existing folder `path` read-only for the block: chmod 0555 (enough for a normal
    user), else `chattr +i` (root ignores modes but not the immutable flag); skip the test when
    neither makes it read-only on this machine. Restored on exit."""
    mode = path.stat().st_mode
    os.chmod(path, 0o555)
    immutable = False
    try:
        if _writable(path):
            result = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
            immutable = result.returncode == 0
            if not immutable or _writable(path):
                pytest.skip("cannot make a read-only folder here (root without chattr +i)")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        os.chmod(path, mode)
