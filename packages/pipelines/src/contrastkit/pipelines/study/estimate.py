"""The wall-time estimate a study prints before it starts: a few timed optimizer steps of each
distinct cell config, scaled to the steps the remaining runs still have to do.

Each config is timed by a throw-away run in a temporary folder: TIMED_STEPS optimizer steps
(data.train_subset = TIMED_STEPS x batch, one epoch, no kNN monitor, no warm-up), logging every
step; seconds per step = (elapsed at step 4 - elapsed at step 2) / 2, which leaves out the first
step's one-off costs (allocations, lazy initialisation).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastkit.pipelines.config import (
    JointTrainingConfig,
    PretrainConfig,
    config_from_dict,
    config_to_dict,
)
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.run_files import METRICS_FILE
from contrastkit.pipelines.study.report import format_duration

TIMED_STEPS = 4

PROBE_ALLOWANCE = (
    "each linear / kNN probe is allowed the time of one pretraining epoch (feature extraction "
    "and the head), each fine-tuning probe its epochs x one pretraining epoch; joint validation "
    "and t-SNE are not included"
)


@dataclass(frozen=True)
class PendingRun:
    """A (cell, seed) the study still has to finish. state: "new", "resume" (done_steps steps
    of its pretraining are in a checkpoint) or "evaluate" (pretraining finished, no row yet)."""

    cell: str
    seed: int
    task: str
    config: PretrainConfig
    state: str
    done_steps: int = 0


@dataclass(frozen=True)
class StepTiming:
    """One cell config timed: seconds per optimizer step, and the real run's steps per epoch."""

    seconds_per_step: float
    steps_per_epoch: int


def timing_key(config: PretrainConfig) -> str:
    """What decides a step's cost: the resolved config without the fields that do not (seed,
    output folder, run length, logging)."""
    raw = config_to_dict(config)
    for name in ("seed", "output_dir", "epochs", "warmup_epochs", "log_every",
                 "checkpoint_every", "keep_last", "progress_bar"):  # fmt: skip
        raw["train"].pop(name, None)
    return repr(sorted((section, sorted(values.items())) for section, values in raw.items()))


def time_config(config: PretrainConfig, task: str) -> StepTiming:
    """Time TIMED_STEPS steps of `config` (task "pretrain" or "joint") in a temporary folder."""
    from contrastkit.pipelines.training.run_data import load_split

    train = load_split(config, "train", verbose=False)
    size = len(train) if config.data.train_subset is None else config.data.train_subset
    batch = config.train.batch_size
    steps_per_epoch = max(size // batch, 1)
    raw = config_to_dict(config)
    timed_rows = min(TIMED_STEPS * batch, len(train))
    with tempfile.TemporaryDirectory(prefix="contrastkit-study-estimate-") as tmp:
        raw["data"]["train_subset"] = timed_rows if timed_rows < len(train) else None
        if task == "joint":  # validation after the epoch: on one batch of the test split
            raw["data"]["knn_test_subset"] = batch
        raw["train"].update(
            epochs=1, warmup_epochs=0, knn_every=0, checkpoint_every=0, log_every=1,
            keep_last=1, progress_bar=False, output_dir=str(Path(tmp) / "run"),
        )  # fmt: skip
        _train(config_from_dict(raw, type(config)), task, train)
        rows = read_metrics(Path(tmp) / "run" / METRICS_FILE)
    return StepTiming(_seconds_per_step(rows), steps_per_epoch)


def _train(config: PretrainConfig, task: str, train_data: Any) -> None:
    """The throw-away run; a signal that stops it stops the study (KeyboardInterrupt), as it
    would have stopped a real run."""
    if task == "joint":
        from contrastkit.pipelines.joint import run_joint

        assert isinstance(config, JointTrainingConfig)
        result = run_joint(config, train_data=train_data)
    else:
        from contrastkit.pipelines.pretrain import run_pretrain

        result = run_pretrain(config, train_data=train_data)
    if result.stopped_by is not None:
        raise KeyboardInterrupt(f"stopped by {result.stopped_by} while timing steps")


def _seconds_per_step(rows: Sequence[dict[str, str]]) -> float:
    """(elapsed at the last timed step - elapsed at step 2) / the steps between; with fewer than
    3 steps (a tiny dataset), the whole elapsed time over the steps (first step included)."""
    elapsed = {int(row["step"]): float(row["elapsed_s"]) for row in rows if row.get("elapsed_s")}
    if not elapsed:
        raise ValueError("the timed steps logged no elapsed_s; cannot estimate the wall time")
    last = max(elapsed)
    if last >= 3 and 2 in elapsed:
        return (elapsed[last] - elapsed[2]) / (last - 2)
    return elapsed[last] / last


def run_seconds(run: PendingRun, timing: StepTiming, probe: str, probe_epochs: int) -> float:
    """Estimated seconds `run` still needs: its remaining steps, plus the probe allowance."""
    epoch_s = timing.steps_per_epoch * timing.seconds_per_step
    total_steps = timing.steps_per_epoch * run.config.train.epochs
    remaining = 0 if run.state == "evaluate" else max(total_steps - run.done_steps, 0)
    seconds = remaining * timing.seconds_per_step
    if run.task == "pretrain":
        seconds += epoch_s * (probe_epochs if probe == "finetune" else 1)
    return seconds


def estimate_lines(runs: Sequence[PendingRun], probe: str, probe_epochs: int) -> list[str]:
    """Time each distinct config of `runs` and say, per cell and in total, how long the remaining
    runs take (the lines the runner prints)."""
    timings: dict[str, StepTiming] = {}
    per_cell: dict[str, list[float]] = {}
    step_s: dict[str, float] = {}
    for run in runs:
        key = timing_key(run.config)
        if key not in timings:
            timings[key] = time_config(run.config, run.task)
        timing = timings[key]
        step_s[run.cell] = timing.seconds_per_step
        per_cell.setdefault(run.cell, []).append(run_seconds(run, timing, probe, probe_epochs))
    lines = [
        f"estimated wall time (from {TIMED_STEPS} timed steps of each cell config, seconds per "
        "step between steps 2 and 4):"
    ]
    for cell, seconds in per_cell.items():
        lines.append(
            f"  {cell}: {len(seconds)} run(s) left, {step_s[cell]:.3f} s/step, "
            f"about {format_duration(sum(seconds))}"
        )
    total = sum(sum(seconds) for seconds in per_cell.values())
    lines.append(f"  total: about {format_duration(total)} ({PROBE_ALLOWANCE})")
    return lines
