"""Stopping a run cleanly: SIGTERM / SIGINT / SIGHUP, or the exit of the launcher that started this
process, finish the current step, save a checkpoint and end the run; every process agrees on the
step it stops after."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist

# What `TrainingResult.stopped_by` says when the launcher's exit stopped the run (a signal's name
# otherwise).
LAUNCHER_EXIT = "launcher exit"
_LAUNCHER_CODE = 1000  # above every signal number: the code the ranks agree on for LAUNCHER_EXIT

# Set by the launchers that start a training process and whose death orphans it: accelerate's
# single-process launcher (ACCELERATE_USE_CPU, set whether or not --cpu was given) and torchrun
# (TORCHELASTIC_RUN_ID, also what `accelerate launch --multi_gpu` runs).
LAUNCHER_ENV = ("ACCELERATE_USE_CPU", "TORCHELASTIC_RUN_ID")


def _say(text: str) -> None:
    """One line on stderr, from a signal handler or a thread: os.write, because a print from a
    handler that interrupted another write to sys.stderr raises "reentrant call"; and errors are
    ignored, because after a SIGHUP the terminal may be gone and the save must still complete."""
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode(errors="replace"))


def _is_broken_pipe(fd: int) -> bool:
    """Whether `fd` is the write end of a pipe whose reader is gone (poll reports POLLERR)."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
    except OSError:
        return False
    if not hasattr(select, "poll"):  # Windows: no poll; nothing to reroute there
        return False
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
    return any(events & select.POLLERR for _, events in poller.poll(0))


def reroute_orphaned_stderr() -> bool:
    """If stderr is a pipe whose reader is gone and stdout is not, send stderr to stdout; True
    when it did.

    accelerate 1.16+ pipes the trainer's stderr through its launcher (to keep the tail for its
    error message) but not its stdout: once the launcher is killed, every message on stderr
    (this module's, the progress bar, the final "continue with" line) would go nowhere.
    """
    if not _is_broken_pipe(2) or _is_broken_pipe(1):
        return False
    with contextlib.suppress(OSError):
        os.dup2(1, 2)
        return True
    return False


class StopRequest:
    """SIGTERM / SIGINT / SIGHUP, or the launcher's exit -> finish the current step, save a
    checkpoint, end the run.

    A second signal does not abort: it says that the checkpoint is being saved and the save
    completes (kill -9 is the way to abort without saving). SIGHUP is handled only when it is not
    ignored, so a run started under `nohup` keeps running when its terminal closes. With one
    process the request is read after every step (a Python attribute: no collective, no device
    sync). With several the ranks agree with an all-reduce over a CPU (gloo) group, only at the
    steps where they already communicate (a metrics row, an epoch end, a checkpoint), so all ranks
    stop after the same step even if the request reached them at different times, and the steps
    in between make no collective for it; a request then waits at most train.log_every - 1 steps.
    """

    def __init__(self, world_size: int) -> None:
        self.code = 0  # a signal number, _LAUNCHER_CODE, or 0 while nothing asked to stop
        self._previous: dict[int, Any] = {}
        self._group = None
        if world_size > 1:
            # A CPU group keeps the per-step agreement off the GPU stream (no device sync).
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        self._world_size = world_size

    def install(self) -> None:
        """Handle SIGTERM, SIGINT and (unless ignored) SIGHUP from now on (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        signums = [signal.SIGTERM, signal.SIGINT]
        hangup = getattr(signal, "SIGHUP", None)  # none on Windows
        if hangup is not None and signal.getsignal(hangup) != signal.SIG_IGN:  # ignored: nohup
            signums.append(hangup)
        for signum in signums:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put back the handlers `install` replaced."""
        for signum, handler in self._previous.items():
            if handler is not None:  # None: installed outside Python, nothing to put back
                signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.code:
            _say(f"{name} received: already stopping: saving the checkpoint, please wait")
            return
        self.code = signum
        _say(f"\n{name} received: finishing this step and saving a checkpoint")

    def launcher_exited(self, parent_pid: int) -> None:
        """The launcher (this process's parent) is gone: stop as a SIGTERM would (nothing more to
        say when a signal already asked to stop; it usually reached both)."""
        if self.code:
            return
        self.code = _LAUNCHER_CODE
        reroute_orphaned_stderr()
        _say(
            f"\nthe launcher (PID {parent_pid}) exited: finishing this step and saving a checkpoint"
        )

    def agreed(self, sync_point: bool = True) -> str | None:
        """Why every rank agrees to stop: a signal's name ("SIGTERM") or LAUNCHER_EXIT; None to
        keep going. Every process calls it at the same points.

        sync_point: whether the ranks meet here anyway (a metrics row, an epoch end, a
        checkpoint). With several processes the agreement is an all-reduce, made only at sync
        points (None elsewhere); with one process the request is read every time, for free.
        """
        if self._world_size > 1 and not sync_point:
            return None
        code = self.code
        if self._world_size > 1:
            flag = torch.tensor([code], dtype=torch.int64)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
            code = int(flag.item())
        if not code:
            return None
        return LAUNCHER_EXIT if code == _LAUNCHER_CODE else signal.Signals(code).name


def started_by_launcher(environ: Mapping[str, str] = os.environ) -> bool:
    """True when a launcher whose death would orphan this process started it (`accelerate
    launch`, torchrun); False for a plain `python pretrain.py`, which must outlive its shell
    under nohup."""
    return any(name in environ for name in LAUNCHER_ENV)


class LauncherWatch:
    """Calls `stop.launcher_exited(parent_pid)` when this process's parent exits.

    accelerate's single-process launcher before 1.16 does not forward signals: a SIGTERM or
    kill -9 to it ends it and leaves the trainer running unseen (1.16+ forwards SIGTERM and
    SIGINT, kills the trainer 5 s later, and still cannot pass on a kill -9). A daemon thread compares os.getppid() with the
    parent seen at `start` every `interval_s` seconds (an orphan is re-parented to init or a
    subreaper), which works on every POSIX system and for every way the launcher can die.
    """

    def __init__(self, stop: StopRequest, interval_s: float = 0.5) -> None:
        self._stop = stop
        self._interval_s = interval_s
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching the current parent process."""
        parent = os.getppid()
        self._thread = threading.Thread(
            target=self._watch, args=(parent,), name="launcher-watch", daemon=True
        )
        self._thread.start()

    def _watch(self, parent: int) -> None:
        while not self._done.wait(self._interval_s):
            if os.getppid() != parent:
                self._stop.launcher_exited(parent)
                return

    def close(self) -> None:
        """Stop watching (the run is over)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


@contextlib.contextmanager
def stop_requests(world_size: int) -> Iterator[StopRequest]:
    """The run's StopRequest: signal handlers installed, and the launcher watched when a launcher
    started this process; both undone when the block ends. Every process enters it together."""
    stop = StopRequest(world_size)
    stop.install()
    watch = LauncherWatch(stop) if started_by_launcher() else None
    if watch is not None:
        watch.start()
    try:
        yield stop
    finally:
        if watch is not None:
            watch.close()
        stop.restore()
