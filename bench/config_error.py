"""How fast the training command answers a config error: the real `pretrain.py` on a bad key, a bad
value and an unknown method name, each run --repeat times in a fresh interpreter.

The command checks the config before importing torch, accelerate or timm, so these should take
about as long as starting Python; for scale, the table also times `import torch` alone and the
import of the pretrain task (what a good config goes on to load). Prints a markdown table of the
median and range of the wall seconds, and the machine's load. Every run gets
OMP_NUM_THREADS=--threads (default: all cores), printed in the header. No assertions on time.

    python bench/config_error.py                  # 5 runs of each
    python bench/config_error.py --repeat 9 --cpus 0,1   # pinned to two cores
    python bench/config_error.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import add_threads_option, machine_line  # bench/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "packages" / "pipelines" / "pretrain.py"
SMOKE = REPO / "packages" / "pipelines" / "configs" / "smoke.yaml"

# case -> (argv after the interpreter, the exit status it must end with)
CASES: dict[str, tuple[list[str], int]] = {
    "bad key (train.batchsize=8)": (
        [str(PRETRAIN), "--config", str(SMOKE), "train.batchsize=8"],
        2,
    ),
    "bad value (optimizer.lr=-1)": ([str(PRETRAIN), "--config", str(SMOKE), "optimizer.lr=-1"], 2),
    "unknown method (method.name=simclr2)": (
        [str(PRETRAIN), "--config", str(SMOKE), "method.name=simclr2"],
        2,
    ),
    "for scale: python -c 'import torch'": (["-c", "import torch"], 0),
    "for scale: import of the pretrain task": (["-c", "import contrastkit.pipelines.pretrain"], 0),
}


def time_once(argv: list[str], expected: int, cpus: set[int] | None, threads: int) -> float:
    """Wall seconds of one run of `python argv` (a fresh interpreter, as a user starts it) with
    OMP_NUM_THREADS=threads (torch's thread count)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        capture_output=True,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    seconds = time.perf_counter() - start
    if done.returncode != expected:
        raise SystemExit(f"{argv} exited {done.returncode}, expected {expected}:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (median reported)")
    parser.add_argument(
        "--cpus", default=None, help="pin every run to these CPUs, e.g. 0,1 (Linux only)"
    )
    add_threads_option(parser, "torch threads of every run (OMP_NUM_THREADS)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    cpus = {int(c) for c in args.cpus.split(",")} if args.cpus else None
    print(
        f"{machine_line(cpus)}; Python {sys.version.split()[0]}; OMP_NUM_THREADS={args.threads}; "
        f"{args.repeat} runs per case"
    )
    print()
    print("| case | median s | min s | max s |")
    print("| --- | --- | --- | --- |")
    for name, (argv, expected) in CASES.items():
        times = [time_once(argv, expected, cpus, args.threads) for _ in range(args.repeat)]
        print(
            f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
