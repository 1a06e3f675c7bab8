"""Between two metrics rows a training step makes no host-device sync and no collective of its own.

On a GPU a step that reads a value back (`.item()`, `.tolist()`, `if tensor:`, `int(tensor)`)
waits for every kernel queued before it, and the next step's kernels cannot be queued ahead. The
calls that do so are few and all go through Python, so these tests wrap them (and the
`torch.distributed` collectives), run short CPU trainings, and count the calls made after each
optimizer step until the next one. Window k holds the work after step k (its metrics row, epoch
end or checkpoint, when due) and the forward / backward of step k + 1. Only windows whose step is
a sync point (a metrics row every `log_every` steps, an epoch end, a checkpoint) may sync.
Collectives made inside the loss or a method (gathering keys, shuffle-BN) are the method's maths,
once per step by design; the training package itself (`contrastkit/pipelines/training/`) must
make none between sync points, in particular none for the stop signal.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from pretrain_helpers import (
    launch_two_processes,
    tiny_image_config,
    tiny_tabular_config,
    toy_tabular,
)

from contrastkit.pipelines.checkpoint import list_checkpoints, read_meta
from contrastkit.pipelines.config import JointTrainingConfig, config_from_dict
from contrastkit.pipelines.joint import run_joint
from contrastkit.pipelines.methods import method_names
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import run_pretrain
from contrastkit.pipelines.training import running_sums

# Tensor methods that read a value back to the host (on CUDA: wait for the device).
TENSOR_SYNCS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
# torch.distributed calls that make a collective.
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast",
    "broadcast_object_list",
    "reduce",
    "reduce_scatter_tensor",
    "all_to_all_single",
    "barrier",
)
TRAINING_PACKAGE = os.sep.join(("contrastkit", "pipelines", "training", ""))

LOG_EVERY = 4
STEPS_PER_EPOCH = 10  # 80 toy images / batch 8
EPOCHS = 2


class SyncCounter:
    """Counts the sync calls made in each window between optimizer steps.

    window: optimizer steps done so far (the count of `RunningSums.step_done` calls); calls
    before the first step (setup, the first forward) are not counted. calls[window] maps
    "<call> <file>:<line>" (the caller outside torch) to how many times it was made.
    """

    def __init__(self) -> None:
        self.window = 0
        self.calls: dict[int, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def record(self, what: str, *, training_only: bool = False) -> None:
        if self.window == 0:
            return
        stack = traceback.extract_stack()[:-3]  # less record, the wrapper's lambda, the wrapper
        if training_only:  # the innermost contrastkit frame is the one that asked for it
            ours = [f for f in stack if f"{os.sep}contrastkit{os.sep}" in f.filename]
            if not ours or TRAINING_PACKAGE not in ours[-1].filename:
                return
        caller = next(
            (f for f in reversed(stack) if f"{os.sep}torch{os.sep}" not in f.filename), stack[-1]
        )
        self.calls[self.window][f"{what} {Path(caller.filename).name}:{caller.lineno}"] += 1

    def step_done(self) -> None:
        self.window += 1

    def between_sync_points(self, sync_points: set[int]) -> dict[int, dict[str, int]]:
        """The calls of every window whose step is not a sync point."""
        return {w: dict(c) for w, c in self.calls.items() if w not in sync_points}


def wrap(owner: Any, name: str, before: Callable[[], None]) -> Callable[[], None]:
    """Replace owner.name by a function that calls `before()` then the original; returns undo."""
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        before()
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)
    return lambda: setattr(owner, name, original)


def install_counter(counter: SyncCounter) -> Callable[[], None]:
    """Wrap every sync call and RunningSums.step_done; returns a function that undoes it all."""
    undo = [
        wrap(torch.Tensor, name, lambda name=name: counter.record(name)) for name in TENSOR_SYNCS
    ]
    undo += [
        wrap(dist, name, lambda name=name: counter.record(name, training_only=True))
        for name in COLLECTIVES
        if hasattr(dist, name)
    ]
    undo.append(wrap(running_sums.RunningSums, "step_done", counter.step_done))

    def uninstall() -> None:
        for undo_one in undo:
            undo_one()

    return uninstall


@pytest.fixture
def counter() -> Iterator[SyncCounter]:
    counter = SyncCounter()
    uninstall = install_counter(counter)
    try:
        yield counter
    finally:
        uninstall()


def sync_points(total_steps: int, log_every: int, steps_per_epoch: int) -> set[int]:
    return {
        step
        for step in range(1, total_steps + 1)
        if step % log_every == 0 or step % steps_per_epoch == 0
    }


def test_the_counter_sees_a_sync_and_a_collective(counter: SyncCounter) -> None:
    """The wrappers count what they must, where it was called: a sync after the first step; a
    collective only when the training package makes it (this one is made from the test)."""
    torch.ones(2).sum().item()  # window 0 (before the first step) is not counted
    counter.step_done()
    line = sys._getframe().f_lineno
    torch.ones(2).sum().item()
    bool(torch.tensor(True))
    torch.zeros(3).tolist()
    if dist.is_available():
        with pytest.raises((RuntimeError, ValueError)):  # no process group: it still is counted
            dist.all_reduce(torch.zeros(1))
    here = Path(__file__).name
    assert counter.calls == {
        1: collections.Counter(
            {f"item {here}:{line + 1}": 1, f"__bool__ {here}:{line + 2}": 1,
             f"tolist {here}:{line + 3}": 1}
        )
    }  # fmt: skip


def _image_run(tmp_path: Path, toy_cifar_dir: Path, **sections: dict[str, Any]) -> None:
    train = {"log_every": LOG_EVERY, "epochs": EPOCHS, "knn_every": 0, "batch_size": 8}
    train.update(sections.pop("train", {}))
    method = {"queue_size": 32, **sections.pop("method", {})}
    raw = tiny_image_config(tmp_path / "run", toy_cifar_dir, method=method, train=train, **sections)
    run_pretrain(config_from_dict(raw))


@pytest.mark.parametrize("method", method_names())
def test_no_sync_between_metrics_rows_for_every_method(
    tmp_path: Path, toy_cifar_dir: Path, counter: SyncCounter, method: str
) -> None:
    _image_run(tmp_path, toy_cifar_dir, method={"name": method})
    total = STEPS_PER_EPOCH * EPOCHS
    assert counter.window == total
    assert counter.between_sync_points(sync_points(total, LOG_EVERY, STEPS_PER_EPOCH)) == {}
    # The rows themselves do read the sums back: the counter is not blind.
    assert any("tolist" in call for call in counter.calls[LOG_EVERY])


IMIX_CASES = [
    ("npair", "mixup"),
    ("moco", "cutmix"),
    ("byol", "mixup"),
    ("simsiam", "cutmix"),
    ("mocov3", "mixup"),
    ("nnclr", "mixup"),
]


@pytest.mark.parametrize(("method", "imix"), IMIX_CASES, ids=[f"{m}-{i}" for m, i in IMIX_CASES])
def test_no_sync_between_metrics_rows_with_imix(
    tmp_path: Path, toy_cifar_dir: Path, counter: SyncCounter, method: str, imix: str
) -> None:
    """i-Mix's virtual labels are made on the device and not value-checked by a read-back."""
    _image_run(tmp_path, toy_cifar_dir, method={"name": method, "imix": imix})
    total = STEPS_PER_EPOCH * EPOCHS
    assert counter.between_sync_points(sync_points(total, LOG_EVERY, STEPS_PER_EPOCH)) == {}


def test_no_sync_with_accumulation_clipping_checkpoints_and_the_online_probe(
    tmp_path: Path, toy_cifar_dir: Path, counter: SyncCounter
) -> None:
    """grad_accum 2 (5 steps an epoch), gradient clipping, a periodic checkpoint every 3 steps,
    the kNN monitor at each epoch end and the online linear classifier."""
    _image_run(
        tmp_path,
        toy_cifar_dir,
        method={"name": "byol"},
        train={
            "grad_accum": 2,
            "clip_grad": 1.0,
            "checkpoint_every": 3,
            "knn_every": 1,
            "online_linear": True,
        },
    )
    total, per_epoch = STEPS_PER_EPOCH * EPOCHS // 2, STEPS_PER_EPOCH // 2
    points = sync_points(total, LOG_EVERY, per_epoch) | {3, 6, 9}
    assert counter.window == total
    assert counter.between_sync_points(points) == {}


def test_no_sync_between_metrics_rows_on_tabular_data(tmp_path: Path, counter: SyncCounter) -> None:
    raw = tiny_tabular_config(
        tmp_path / "run",
        method={"name": "npair", "imix": "mixup"},
        data={"augment": "input_dropout_views"},
        train={"log_every": 3, "epochs": 2, "batch_size": 32},
    )
    run_pretrain(config_from_dict(raw), train_data=toy_tabular(count=256))
    total = 256 // 32 * 2
    assert counter.window == total
    assert counter.between_sync_points(sync_points(total, 3, 256 // 32)) == {}


def test_no_sync_between_metrics_rows_in_joint_training(
    tmp_path: Path, toy_cifar_dir: Path, counter: SyncCounter
) -> None:
    """Joint training (ISD + cross-entropy, the classifier's accuracy logged) shares the loop."""
    raw = tiny_image_config(
        tmp_path / "run",
        toy_cifar_dir,
        method={"name": "isd", "queue_size": 48},
        data={"image_size": 32, "augment": "isd_views"},
        train={"log_every": LOG_EVERY, "epochs": EPOCHS, "knn_every": 0, "batch_size": 8},
    )
    raw["joint"] = {"ssl_weight": 0.5}
    run_joint(config_from_dict(raw, JointTrainingConfig))
    total = STEPS_PER_EPOCH * EPOCHS
    assert counter.window == total
    assert counter.between_sync_points(sync_points(total, LOG_EVERY, STEPS_PER_EPOCH)) == {}


# ------------------------------------------------------------------ two processes

_TWO_PROCESS_DRIVER = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
import test_host_syncs as t
from contrastkit.pipelines import pretrain
counter = t.SyncCounter()
rank = int(os.environ["RANK"])
stop_after = int(os.environ.get("CK_TEST_STOP_AFTER_STEP", "0"))
if stop_after and rank == 0:
    original = counter.step_done
    def step_done():
        original()
        if counter.window == stop_after:
            os.kill(os.getpid(), signal.SIGTERM)
    counter.step_done = step_done
t.install_counter(counter)
try:
    code = pretrain.main(sys.argv[1:])
finally:
    out = os.environ["CK_TEST_COUNTS"] + f".{{rank}}.json"
    with open(out, "w") as f:
        json.dump({{"windows": counter.window, "calls": {{w: dict(c) for w, c in counter.calls.items()}}}}, f)
sys.exit(code)
"""


def test_two_processes_no_collective_of_the_loop_between_rows_and_a_stop_waits_for_a_row(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    """Two gloo processes, MoCo (shuffle-BN and the queue gather every step: the method's own
    collectives), rows every 3 steps. SIGTERM reaches rank 0 only, after step 4: both ranks stop
    after step 6, the next row, with a checkpoint of step 6, and between rows neither process
    made a sync or a collective from the training package (the stop agreement included)."""
    from pretrain_helpers import write_yaml

    raw = tiny_image_config(
        tmp_path / "unused",
        toy_cifar_dir,
        method={"name": "moco", "queue_size": 24},
        train={"epochs": 1, "knn_every": 0, "batch_size": 4, "log_every": 3},
    )
    config = write_yaml(tmp_path / "config.yaml", raw)
    driver = tmp_path / "driver.py"
    driver.write_text(_TWO_PROCESS_DRIVER.format(tests=str(Path(__file__).parent)))
    run_dir = tmp_path / "two"
    counts = tmp_path / "counts"
    result = launch_two_processes(
        driver,
        ["--config", str(config), "--output-dir", str(run_dir)],
        CK_TEST_STOP_AFTER_STEP="4",
        CK_TEST_COUNTS=str(counts),
    )
    assert result.returncode == 0, result.stderr
    assert "SIGTERM received" in result.stderr
    checkpoint = list_checkpoints(run_dir)[-1]
    assert read_meta(checkpoint)["step"] == 6
    assert [int(row["step"]) for row in read_metrics(run_dir / "metrics.csv")] == [3, 6]
    for rank in (0, 1):
        recorded = json.loads(Path(f"{counts}.{rank}.json").read_text())
        assert recorded["windows"] == 6
        calls = {int(w): c for w, c in recorded["calls"].items()}
        assert {w: c for w, c in calls.items() if w not in {3, 6}} == {}
        # At the rows the ranks do meet: the sums' all-reduce and the stop agreement.
        assert any("all_reduce" in call for call in calls[3])
