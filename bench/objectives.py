"""Forward+backward time and peak memory of contrastkit's losses against plain PyTorch and lightly.

Prints one table per device (CPU always, CUDA when present). Each cell runs in a fresh
subprocess so its peak memory is its own. Usage:

    python bench/objectives.py            # N in {256, 1024, 4096}, D = 128, MoCo/ISD queue K = 65536
    python bench/objectives.py --quick    # N = 256 only, K = 4096: a smoke run
    python bench/objectives.py --threads 1 --repeats 10

Columns:
- contrastkit: `nt_xent_loss`; `moco_loss` + `MemoryQueue.enqueue`; `isd_loss`.
- plain: the textbook PyTorch versions (full logits matrix, torch.cat, F.cross_entropy /
  F.kl_div), as in the SimCLR, MoCo and ISD reference code.
- lightly: `lightly.loss.NTXentLoss` (SimCLR) and `NTXentLoss(memory_bank_size=(K, D))`
  (its MoCo-style loss, bank update included); shown only when `lightly` is importable (it is
  a bench-only dependency; lightly has no ISD loss).

Time: the best of --repeats forward+backward calls (the same number for every implementation;
CUDA: CUDA events, synchronised); a tiny step and the first full call are warm-ups. The minimum,
because on a shared machine other processes only ever add time. Each cell's process runs torch
with --threads threads (default: all cores), printed in the header.
Peak memory: on CPU the growth of the process's peak resident set over its resident set just
before the first full call (the kernel's VmHWM mark, reset through /proc/self/clear_refs
first), i.e. what the step held at its peak beyond its inputs (Linux only); on CUDA
`torch.cuda.max_memory_allocated()` minus the memory allocated before the call. Nothing here
asserts on time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _machine import add_threads_option, apply_threads, cpu_name  # bench/ is on sys.path
from _peak_memory import CPU_MEASURE, CUDA_MEASURE, PeakMemory

LOSSES = ("nt_xent", "moco", "isd")
IMPLEMENTATIONS = ("contrastkit", "plain", "lightly")
DIM = 128
TEMPERATURE = {"nt_xent": 0.5, "moco": 0.2}
ISD_STUDENT_T, ISD_TEACHER_T = 0.1, 0.01  # ISD-plus


def _plain_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    n = z1.shape[0]
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    labels = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    return F.cross_entropy(logits, labels)


def _plain_moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float):
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negative = q @ queue.T
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def _plain_isd(student: torch.Tensor, teacher: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    s, t = F.normalize(student, dim=1), F.normalize(teacher.detach(), dim=1)
    logits_s = s @ queue.T / ISD_STUDENT_T
    logits_t = t @ queue.T / ISD_TEACHER_T
    return F.kl_div(
        F.log_softmax(logits_s, dim=1), F.softmax(logits_t, dim=1), reduction="batchmean"
    )


def make_loss_step(
    loss: str, impl: str, n: int, k: int, device: torch.device
) -> Callable[[], None]:
    """A closure doing one forward+backward on fixed random inputs; raises ImportError for lightly."""
    generator = torch.Generator(device=device).manual_seed(0)

    def rand(*shape: int, grad: bool = False) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=device).requires_grad_(grad)

    a, b = rand(n, DIM, grad=True), rand(n, DIM, grad=loss == "nt_xent")
    if impl == "lightly":
        from lightly.loss import NTXentLoss  # bench-only dependency

        if loss == "isd":
            raise ImportError("lightly has no ISD loss")
        bank = 0 if loss == "nt_xent" else (k, DIM)
        module = NTXentLoss(temperature=TEMPERATURE[loss], memory_bank_size=bank).to(device)
        return lambda: module(a, b).backward()

    from contrastkit.objectives import MemoryQueue, isd_loss, moco_loss, nt_xent_loss

    memory = MemoryQueue(k, DIM).to(device)
    if impl == "plain":
        if loss == "nt_xent":
            return lambda: _plain_nt_xent(a, b, TEMPERATURE[loss]).backward()
        if loss == "moco":

            def plain_moco_step() -> None:
                _plain_moco(a, b, memory.keys, TEMPERATURE[loss]).backward()
                memory.enqueue(b)

            return plain_moco_step
        return lambda: _plain_isd(a, b, memory.keys).backward()
    if loss == "nt_xent":
        return lambda: nt_xent_loss(a, b, TEMPERATURE[loss]).backward()
    if loss == "moco":

        def moco_step() -> None:
            moco_loss(a, b, memory.keys, TEMPERATURE[loss]).backward()
            memory.enqueue(b)

        return moco_step
    return lambda: isd_loss(a, b, memory.keys, ISD_STUDENT_T, ISD_TEACHER_T).backward()


def timed_ms(step: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Best of `repeats` calls of `step`, in ms (CUDA: CUDA events around each call)."""
    times: list[float] = []
    while len(times) < repeats:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            step()
            times.append((time.perf_counter() - begin) * 1e3)
    return min(times)


def _measure(loss: str, impl: str, n: int, k: int, device_name: str, repeats: int) -> dict:
    device = torch.device(device_name)
    try:
        # A tiny step first, so one-time costs (thread pools, autograd engine, kernel caches)
        # count neither in the time nor in the peak memory.
        make_loss_step(loss, impl, 8, 64, device)()
        step = make_loss_step(loss, impl, n, k, device)
    except ImportError as error:
        return {"skip": str(error)}
    with PeakMemory(device) as peak:
        step()
    # Without a resettable peak (not Linux) the growth since start-up is no block's own peak.
    exact = peak.measure in (CUDA_MEASURE, CPU_MEASURE)
    return {"ms": timed_ms(step, device, repeats), "peak_mb": peak.mib if exact else None}


def _run_cell(
    loss: str, impl: str, n: int, k: int, device: str, repeats: int, threads: int
) -> dict:
    command = [sys.executable, __file__, "--cell", loss, impl, str(n), str(k), device, str(repeats)]
    command += ["--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return {"skip": f"failed: {result.stderr.strip().splitlines()[-1:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _format(cell: dict) -> tuple[str, str]:
    if "skip" in cell:
        return "-", "-"
    peak = "n/a" if cell["peak_mb"] is None else f"{cell['peak_mb']:.0f}"
    return f"{cell['ms']:.1f}", peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=256, K=4096, 1 repeat")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed calls per cell, the same for every cell"
    )
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    parser.add_argument("--cell", nargs=6, help=argparse.SUPPRESS)
    add_threads_option(parser)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    threads = apply_threads(args.threads)
    if args.cell:
        loss, impl, n, k, device, repeats = args.cell
        print(json.dumps(_measure(loss, impl, int(n), int(k), device, int(repeats))))
        return

    sizes, queue_size = ((256,), 4096) if args.quick else ((256, 1024, 4096), 65536)
    repeats = 1 if args.quick else args.repeats
    devices = []
    if args.device in ("all", "cpu"):
        devices.append("cpu")
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append("cuda")
    print(
        f"torch {torch.__version__}, torch threads {threads}, D={DIM}, MoCo/ISD queue "
        f"K={queue_size}, best of {repeats} calls in every cell"
    )
    for device in devices:
        if device == "cpu":
            where = f"{cpu_name()}, {threads} threads"
        else:
            where = torch.cuda.get_device_name()
        print(f"\n{device}: {where}")
        header = "| loss | N | contrastkit ms | peak MB | plain ms | peak MB | lightly ms | peak MB | vs lightly |"
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        lightly_note = ""
        for loss in args.losses:
            for n in sizes:
                cells = {
                    i: _run_cell(loss, i, n, queue_size, device, repeats, threads)
                    for i in IMPLEMENTATIONS
                }
                ours, theirs = cells["contrastkit"], cells["lightly"]
                speedup = "-"
                if "skip" not in ours and "skip" not in theirs:
                    speedup = f"{theirs['ms'] / ours['ms']:.2f}x"
                columns = [loss, str(n)]
                for impl in IMPLEMENTATIONS:
                    columns.extend(_format(cells[impl]))
                columns.append(speedup)
                print("| " + " | ".join(columns) + " |", flush=True)
                if "skip" in theirs and not lightly_note:
                    lightly_note = f"lightly column empty: {theirs['skip']}"
        if lightly_note:
            print(f"({lightly_note})")


if __name__ == "__main__":
    main()
