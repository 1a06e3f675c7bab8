"""require_shared_data: a skip without the real data, a failure on CI."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_data import require_shared_data


def test_missing_data_skips_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"nothing\.npz"):
        require_shared_data(tmp_path / "nothing.npz")


def test_missing_data_fails_on_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_shared_data(tmp_path / "nothing.npz")


def test_present_data_neither_skips_nor_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    (tmp_path / "here.npz").write_bytes(b"x")
    require_shared_data(tmp_path / "here.npz")  # returns quietly
