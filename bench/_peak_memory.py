"""Peak memory of one measured block: what it held at its peak beyond what was allocated before
(bench/objectives.py and the device check's parts).

CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus
memory_allocated() at the start (tensors only, not the caching allocator's reserve). CPU (the dry
run): the growth of this process's peak resident set (VmHWM, reset through
/proc/self/clear_refs), or where that reset is refused, of ru_maxrss (a peak since the process
started, so a lower bound of the block's own peak).
"""

from __future__ import annotations

import gc
import resource
from types import TracebackType

import torch

CUDA_MEASURE = "torch.cuda.max_memory_allocated() beyond the allocation at the start"
CPU_MEASURE = "growth of the process's peak resident set (VmHWM)"


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    raise OSError(f"{field} not in /proc/self/status")


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class PeakMemory:
    """`with PeakMemory(device) as peak: ...`, then `peak.mib` (MiB) and `peak.measure` (how)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib = float("nan")
        self.measure = CUDA_MEASURE if device.type == "cuda" else CPU_MEASURE
        self._start = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        elif _reset_cpu_peak():
            self._start = _status_bytes("VmRSS")
        else:
            self.measure = "growth of ru_maxrss (peak resident set since the process started)"
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.measure == CPU_MEASURE:
            peak = _status_bytes("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.mib = max(peak - self._start, 0) / 2**20
