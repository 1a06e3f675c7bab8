"""The run lock on its own (in this process: flock locks belong to an open file, so two RunLocks
exclude each other even here): who holds it is named, release removes it, a dead run's lock file
is taken over with a warning, and a lock file replaced while we locked it is not trusted. The
real command against a locked folder is in test_signals.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from contrastkit.pipelines.preflight import PathProblem
from contrastkit.pipelines.run_files import LOCK_FILE
from contrastkit.pipelines.training.run_lock import RunLock, RunLocked, hold_run_dir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the lock is enforced on POSIX")


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = RunLock(tmp_path).acquire()
    content = json.loads((tmp_path / LOCK_FILE).read_text())
    assert content["pid"] == os.getpid() and content["host"] == socket.gethostname()
    assert content["started"] and content["command"]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RunLocked) as refused:
        RunLock(tmp_path).acquire()
    message = str(refused.value)
    assert message == (
        f"output dir {str(tmp_path)!r} is in use by another run (PID {os.getpid()} on "
        f"{socket.gethostname()}, started {content['started']}); wait for it or stop it "
        f"(kill {os.getpid()})"
    )
    assert isinstance(refused.value, ValueError)  # the command line's exit status 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == content  # the holder's, untouched
    holder.release()


def test_release_removes_the_file_and_frees_the_lock(tmp_path: Path, capsys) -> None:
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).is_file()
    assert not (tmp_path / LOCK_FILE).exists()
    second = RunLock(tmp_path).acquire()  # free again, and no takeover warning: nothing was left
    assert "warning" not in capsys.readouterr().err
    second.release()
    second.release()  # twice is harmless


def test_lock_file_of_a_dead_run_is_taken_over_with_a_warning(tmp_path: Path, capsys) -> None:
    # What kill -9 leaves: the kernel freed the flock, the file still names the dead process.
    dead = _dead_pid()
    stale = {"pid": dead, "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))
    lock = RunLock(tmp_path).acquire()
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line
    assert f"PID {dead} on {socket.gethostname()}, started 2020-01-01T00:00:00" in err
    assert "taking over the lock" in err and str(tmp_path) in err
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_holder_on_another_host_is_named_with_its_host(tmp_path: Path) -> None:
    holder = RunLock(tmp_path).acquire()
    other = {"pid": 4242, "host": "node-17", "started": "2020-01-01T00:00:00", "command": "x"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(other))  # same file: still locked by `holder`
    with pytest.raises(RunLocked, match=r"\(PID 4242 on node-17, .*\(kill 4242 on node-17\)$"):
        RunLock(tmp_path).acquire()
    holder.release()


def test_holder_that_has_not_written_its_details_yet(tmp_path: Path) -> None:
    holder = RunLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).write_text("")
    with pytest.raises(RunLocked, match=r"is in use by another run \(it holds .*\.lock'\)"):
        RunLock(tmp_path).acquire()
    holder.release()


def test_lock_file_replaced_between_open_and_lock_is_not_trusted(
    tmp_path: Path, monkeypatch
) -> None:
    """The race release() leaves: B opens the file, A releases (unlinks it) and C creates and
    locks a new one, then B's lock on the old, unlinked file succeeds. B must see that the file it
    locked is no longer the one at the path, and try again (and then find C)."""
    first = RunLock(tmp_path).acquire()
    latecomer = RunLock(tmp_path)
    original = RunLock._lock
    third: list[RunLock] = []

    def lock_after_a_swap(self: RunLock, fd: int) -> bool:
        if self is latecomer and not third:
            first.release()
            third.append(RunLock(tmp_path).acquire())
        return original(self, fd)

    monkeypatch.setattr(RunLock, "_lock", lock_after_a_swap)
    with pytest.raises(RunLocked, match=f"PID {os.getpid()}"):
        latecomer.acquire()
    assert third and (tmp_path / LOCK_FILE).is_file()  # C still holds the file at the path
    third[0].release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_release_leaves_a_newer_lock_file_alone(tmp_path: Path) -> None:
    lock = RunLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).unlink()  # someone deleted ours by hand, another run made its own
    newer = RunLock(tmp_path).acquire()
    lock.release()
    assert (tmp_path / LOCK_FILE).is_file()
    newer.release()


def test_hold_run_dir_checks_the_folder_and_locks_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "new" / "run"
    with hold_run_dir(run_dir, is_main=True, world_size=1) as lock:
        assert run_dir.is_dir() and lock is not None
        with pytest.raises(RunLocked):
            RunLock(run_dir).acquire()
    assert not (run_dir / LOCK_FILE).exists()
    with hold_run_dir(run_dir, is_main=False, world_size=1) as lock:  # other ranks do not lock
        assert lock is None and not (run_dir / LOCK_FILE).exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with (
        pytest.raises(PathProblem, match="is a file, not a folder"),
        hold_run_dir(a_file, is_main=True, world_size=1),
    ):
        pass
