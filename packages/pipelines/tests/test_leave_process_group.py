"""leave_process_group on two real gloo processes: with wait=True a process that finished first
waits for the other before tearing the group down; with wait=False it does not wait; without a
group both are no-ops."""

from __future__ import annotations

import time
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from contrastkit.pipelines.training.accelerator import leave_process_group

WORLD = 2
LATE_S = 1.5  # how long rank 0 works on alone after rank 1 is done


def _worker(rank: int, init_file: str, out: str, wait: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    folder = Path(out)
    if rank == 0:  # the main process still writes its results when the other one is done
        time.sleep(LATE_S)
        (folder / "written").write_text("results")
        leave_process_group(wait=wait)
    else:
        leave_process_group(wait=wait)
        # What rank 1 saw when it left: had rank 0 finished writing?
        (folder / "seen").write_text(str((folder / "written").exists()))
    assert not dist.is_initialized()
    leave_process_group(wait=wait)  # again: a no-op


def _run(tmp_path: Path, wait: bool) -> str:
    out = tmp_path / f"wait-{wait}"
    out.mkdir()
    mp.spawn(_worker, args=(str(out / "store"), str(out), wait), nprocs=WORLD, join=True)
    return (out / "seen").read_text()


def test_wait_true_waits_for_the_last_process(tmp_path: Path) -> None:
    assert _run(tmp_path, wait=True) == "True"


def test_wait_false_leaves_at_once(tmp_path: Path) -> None:
    assert _run(tmp_path, wait=False) == "False"


def test_without_a_group_it_is_a_no_op() -> None:
    assert not dist.is_initialized()
    leave_process_group(wait=True)
    leave_process_group(wait=False)
    assert not dist.is_initialized()
