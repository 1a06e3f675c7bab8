"""What machine a benchmark ran on, for the tables the bench scripts print."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(cpus: set[int] | None) -> str:
    """`machine: <cpu>, <N CPUs or N pinned CPUs>; load average L at start`: the opening of a
    bench's header line."""
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = f"{len(cpus)} pinned CPUs" if cpus else f"{os.cpu_count()} CPUs"
    return f"machine: {cpu_name()}, {where}; load average {load:.2f} at start"
