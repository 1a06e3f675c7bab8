"""Stopping on a signal: SIGTERM / SIGINT finish the current step, save a checkpoint and exit
non-zero; every process of a run agrees on the step it stops after."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import torch
import torch.distributed as dist


class StopRequest:
    """SIGTERM / SIGINT -> finish the current step, save a checkpoint, exit non-zero.

    A second signal aborts at once (KeyboardInterrupt), without saving. With several processes
    the decision is agreed on by an all-reduce over a CPU (gloo) group after every step, so all
    ranks stop after the same step even if the signal reached them at different times.
    """

    def __init__(self, world_size: int) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}
        self._group = None
        if world_size > 1:
            # A CPU group keeps the per-step agreement off the GPU stream (no device sync).
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        self._world_size = world_size

    def install(self) -> None:
        """Handle SIGTERM / SIGINT from now on (only the main thread may install handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put back the handlers `install` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:
            raise KeyboardInterrupt(
                f"second {signal.Signals(signum).name}: aborting without a checkpoint"
            )
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
            "(send it again to abort without saving)",
            file=sys.stderr,
            flush=True,
        )

    def agreed(self) -> int:
        """The signal number every rank agrees to stop for (0: keep going). Every process calls
        it after every optimizer step (an all-reduce when there are several)."""
        if self._world_size == 1:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())
