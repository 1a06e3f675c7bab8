"""The running sums behind metrics.csv rows and epoch means, one set per process.

They are part of every checkpoint (`rank_state-{r}.pt`, entry "loop"), so a resumed run's rows
and epoch means are those of an uninterrupted run, even from a checkpoint inside a log window.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor


class RunningSums:
    """Sums of the model's logged values over the current log window and the current epoch.

    keys: the logged names, in the order of the model's `logged()` (None until the first batch).
    window, epoch_sums: (len(keys),) float32 sums on this process's device, each batch's values
    divided by grad_accum (so a sum over an optimizer step's micro-batches is its mean).
    steps_in_log: optimizer steps in the current window.
    """

    def __init__(self) -> None:
        self.keys: list[str] | None = None
        self.window: Tensor | None = None
        self.epoch_sums: Tensor | None = None
        self.steps_in_log = 0

    def add(self, logged: Mapping[str, Tensor], grad_accum: int) -> None:
        """Add one micro-batch's logged scalars (name -> 0-dim tensor) to both sums."""
        values = torch.stack([v.detach().float() for v in logged.values()]) / grad_accum
        if self.window is None or self.epoch_sums is None:
            self.keys = list(logged)
            self.window = torch.zeros_like(values)
            self.epoch_sums = torch.zeros_like(values)
        self.window += values
        self.epoch_sums += values

    def step_done(self) -> None:
        """An optimizer step finished: it counts towards the window's mean."""
        self.steps_in_log += 1

    def epoch_means(self, accelerator: Accelerator, steps_per_epoch: int) -> dict[str, float]:
        """The epoch's means over its steps and every process; starts the next epoch's sums.

        Every process must call it (an all-reduce)."""
        assert self.keys is not None and self.epoch_sums is not None
        means = accelerator.reduce(self.epoch_sums, reduction="mean")
        self.epoch_sums.zero_()
        return dict(zip(self.keys, (means / steps_per_epoch).tolist(), strict=True))

    def window_means(self, accelerator: Accelerator) -> dict[str, float]:
        """The window's means over its steps and every process (an all-reduce: every process
        calls it). The window is not reset: call `start_window` once the row is written."""
        assert self.keys is not None and self.window is not None
        sums = accelerator.reduce(self.window, reduction="mean")
        return dict(zip(self.keys, (sums / self.steps_in_log).tolist(), strict=True))

    def start_window(self) -> None:
        """A metrics row was written: the next window starts empty."""
        assert self.window is not None
        self.window.zero_()
        self.steps_in_log = 0

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entry: {"keys", "window", "steps_in_log", "epoch_sums"} (the 0.1 layout)."""
        return {
            "keys": self.keys,
            "window": self.window,
            "steps_in_log": self.steps_in_log,
            "epoch_sums": self.epoch_sums,
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | None = None) -> None:
        """Restore `state_dict()`'s entry; device: where the sums live (the batches' device)."""
        self.keys = None if state["keys"] is None else list(state["keys"])
        self.window, self.epoch_sums = (
            None if state[name] is None else state[name].to(device)
            for name in ("window", "epoch_sums")
        )
        self.steps_in_log = int(state["steps_in_log"])
