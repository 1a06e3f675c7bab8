"""The real data in ../shared/data: tests that need it skip when it is absent, except on CI
(the `CI` environment variable set), where missing data is a failure, not a silent skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def require_shared_data(*paths: Path, what: str = "the shared data") -> None:
    """Skip the calling test when any of `paths` is missing; fail instead when `CI` is set."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if not missing:
        return
    message = f"{what} not found: {', '.join(missing)}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so tests that need real data must not skip)")
    pytest.skip(message)
