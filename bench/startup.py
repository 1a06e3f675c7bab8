"""Start-up and total wall time of the README's smoke run: `python packages/pipelines/pretrain.py
--config packages/pipelines/configs/smoke.yaml` on real CIFAR-10 (../shared/data/cifar10), the
real command in a fresh interpreter, --repeat times.

start-up: from starting the process to the first row of metrics.csv (imports, reading the data,
building the model, the first step); total: until the process exits. The table also gives the
import of the pretrain task alone. OMP_NUM_THREADS is --threads (default: all cores, as every
bench; the README's smoke-run numbers use --threads 1: on a busy machine torch's OpenMP threads
spin in barriers). No assertions on time.

    python bench/startup.py                      # 3 runs
    python bench/startup.py --threads 1          # the README's setting
    python bench/startup.py --cpus 0,1 --repeat 5   # pinned to two cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _machine import add_threads_option, machine_line  # bench/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "packages" / "pipelines" / "pretrain.py"
SMOKE = REPO / "packages" / "pipelines" / "configs" / "smoke.yaml"
CIFAR_DIR = REPO / ".." / "shared" / "data" / "cifar10"


def _pin(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child process to `cpus` (None: not pinned)."""
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def _has_a_row(metrics: Path) -> bool:
    try:
        return len(metrics.read_text().splitlines()) >= 2  # the header, then step 1
    except OSError:
        return False


def time_smoke(data_dir: Path, env: dict[str, str], cpus: set[int] | None) -> tuple[float, float]:
    """(seconds to the first metrics.csv row, seconds to the end) of one smoke run."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "smoke"
        argv = [str(PRETRAIN), "--config", str(SMOKE), "--data-dir", str(data_dir)]
        argv += ["--output-dir", str(run), "train.progress_bar=false"]
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_pin(cpus),
        )
        first_row = None
        while process.poll() is None:
            if first_row is None and _has_a_row(run / "metrics.csv"):
                first_row = time.perf_counter() - start
            time.sleep(0.02)
        total = time.perf_counter() - start
        stderr = process.stderr.read() if process.stderr else ""
        if process.returncode != 0 or first_row is None:
            raise SystemExit(f"the smoke run exited {process.returncode}:\n{stderr}")
    return first_row, total


def time_import(env: dict[str, str], cpus: set[int] | None) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import contrastkit.pipelines.pretrain"],
        cwd=REPO,
        env=env,
        check=True,
        preexec_fn=_pin(cpus),
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs (median reported)")
    parser.add_argument("--cpus", default=None, help="pin the runs to these CPUs, e.g. 0,1")
    parser.add_argument("--data-dir", type=Path, default=CIFAR_DIR)
    add_threads_option(parser, "torch threads of every run (OMP_NUM_THREADS)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if not (args.data_dir / "cifar10_train_1.npz").is_file():
        raise SystemExit(f"CIFAR-10 npz files not found in {args.data_dir} (pass --data-dir)")
    cpus = {int(c) for c in args.cpus.split(",")} if args.cpus else None
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    print(f"{machine_line(cpus)}; OMP_NUM_THREADS={args.threads}; {args.repeat} runs")
    print()
    print("| what | median s | min s | max s |")
    print("| --- | --- | --- | --- |")
    imports = [time_import(env, cpus) for _ in range(args.repeat)]
    runs = [time_smoke(args.data_dir, env, cpus) for _ in range(args.repeat)]
    for name, times in (
        ("import of the pretrain task", imports),
        ("smoke run: start-up (to the first metrics.csv row)", [r[0] for r in runs]),
        ("smoke run: total", [r[1] for r in runs]),
    ):
        print(
            f"| {name} | {statistics.median(times):.1f} | {min(times):.1f} | {max(times):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
