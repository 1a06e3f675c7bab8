"""What machine a benchmark ran on, and the `--threads` option every bench script takes.

Every bench prints its torch thread count beside its numbers: CPU timings on a shared machine
mean little without it. torch is imported inside the functions, so scripts that only start
subprocesses (config_error.py, startup.py) stay quick to import.
"""

from __future__ import annotations

import argparse
import os
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
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = f"{len(cpus)} pinned CPUs" if cpus else f"{os.cpu_count()} CPUs"
    return f"machine: {cpu_name()}, {where}; load average {load:.2f} at start"


def all_cores() -> int:
    """The logical CPUs this machine has (os.cpu_count(), at least 1): `--threads`' default."""
    return os.cpu_count() or 1


def add_threads_option(parser: argparse.ArgumentParser, what: str = "torch CPU threads") -> None:
    """Add `--threads N` (default: all cores) to a bench's command line."""
    parser.add_argument(
        "--threads",
        type=int,
        default=all_cores(),
        help=f"{what} (torch.set_num_threads; default: all cores, {all_cores()} here)",
    )


def apply_threads(threads: int) -> int:
    """torch.set_num_threads(threads) after checking it; returns the count torch now uses."""
    import torch

    if threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return torch.get_num_threads()
