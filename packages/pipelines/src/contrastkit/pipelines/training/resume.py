"""Resuming a run: which checkpoint `--resume` means, whether it fits this run, and the state a
checkpoint holds (written by `save_training_checkpoint`, read back by `restore_training_state`).

The folder mechanics (atomic folders, pruning, the config comparison) are `checkpoint`'s.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from contrastkit.pipelines import checkpoint as ckpt
from contrastkit.pipelines.atomic import save_torch_atomic, write_text_atomic
from contrastkit.pipelines.checkpoint_integrity import load_torch_file
from contrastkit.pipelines.config import (
    PretrainConfig,
    config_to_dict,
    config_to_yaml,
    read_config_file,
)
from contrastkit.pipelines.run_files import (
    BACKBONE_FILE,
    CONFIG_FILE,
    STATE_FILE,
    rank_state_file,
)
from contrastkit.pipelines.training.rng import capture_rng_state, restore_rng_state
from contrastkit.pipelines.training.running_sums import RunningSums
from contrastkit.pipelines.training.task import TrainingTask

# ---------------------------------------------------------------- which checkpoint, and does it fit


def _say(text: str) -> None:
    """A note on stderr, from the main process only (every process looks the checkpoint up)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(text, file=sys.stderr, flush=True)


def _same_folder(a: str | Path, b: Path) -> bool:
    return Path(a).expanduser().resolve() == b.expanduser().resolve()


def find_resume_checkpoint(resume: str | Path | None, run_dir: Path) -> Path | None:
    """The checkpoint folder `resume` names, checked against the sizes and SHA-256 sums its
    meta.json records (`checkpoint.verify_checkpoint`).

    None -> a new run (refused when `run_dir` already holds checkpoint folders); "latest" -> the
    newest checkpoint of `run_dir` that verifies, saying why each newer one was skipped (None
    when there is none yet; ValueError listing them when every one fails its check); a path ->
    that checkpoint folder (ValueError naming the file and the problem when it fails its check)
    or that run directory's newest good one. In `run_dir` itself (locked by this run), a
    checkpoint that a crash left under a temporary name is put back first. Nothing is deleted.
    """
    if resume is None or str(resume) == "latest" or _same_folder(resume, run_dir):
        ckpt.recover_interrupted_saves(run_dir)
    if resume is None:
        existing = ckpt.checkpoint_folders(run_dir)
        if existing:
            raise ValueError(
                f"output dir {str(run_dir)!r} already holds checkpoints (latest "
                f"{existing[-1].name}); pass --resume latest to continue that run, or choose "
                "another --output-dir"
            )
        return None
    if str(resume) != "latest":
        path = ckpt.resolve_checkpoint(resume, on_skip=lambda note: _say(f"--resume: {note}"))
        # A run directory's pick is verified already; a checkpoint folder named directly is not.
        problems = ckpt.verify_checkpoint(path) if path == Path(resume).expanduser() else []
        if problems:
            raise ValueError(
                f"cannot resume from {str(path)!r}: " + "; ".join(problems) + "; pass an "
                "earlier checkpoint folder, or --resume latest to take the newest one that is "
                "intact (nothing was written)"
            )
        return path
    found, skipped = ckpt.newest_good_checkpoint(run_dir)
    for folder, problems in skipped:
        _say(f"--resume latest: {ckpt.skipped_note(folder, problems)}")
    if found is None and skipped:
        advice = (
            f"move them out of {str(run_dir)!r} to start a new run there, or pass --resume with "
            "a good checkpoint folder (nothing was written)"
        )
        raise ValueError(
            "--resume latest: " + ckpt.no_good_checkpoint_message(run_dir, skipped, advice)
        )
    if found is None:
        _say(f"--resume latest: no checkpoint in {str(run_dir)!r} yet; starting a new run")
    elif skipped:
        _say(f"--resume latest: using {found.name}, the newest checkpoint that passes its check")
    return found


def check_resumable(checkpoint: Path, config: PretrainConfig, world_size: int) -> dict[str, Any]:
    """The checkpoint's meta.json, after checking that its config and process count fit this
    run (ValueError naming every difference otherwise)."""
    meta = ckpt.read_meta(checkpoint)
    ckpt.check_resume_compatible(
        checkpoint,
        read_config_file(checkpoint / CONFIG_FILE),
        config_to_dict(config),
        checkpoint_world_size=int(meta.get("world_size", 1)),
        world_size=world_size,
    )
    return meta


def check_same_steps_per_epoch(
    checkpoint: Path, meta: dict[str, Any], steps_per_epoch: int
) -> None:
    """Refuse a checkpoint whose epochs had another length (the training data changed)."""
    if int(meta.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
        raise ValueError(
            f"cannot resume from {str(checkpoint)!r}: it was written with "
            f"{meta['steps_per_epoch']} steps per epoch, this run's data gives {steps_per_epoch} "
            "(the training data changed); nothing was written"
        )


# ---------------------------------------------------------------- the state a checkpoint holds


@dataclass
class Position:
    """Where a run stands: optimizer steps done, and the next batch (epoch, batch in it)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


@dataclass
class TrainingState:
    """What a checkpoint saves of one process of a run.

    model: the unwrapped model (never the DDP wrapper). augment: the view pipeline
    (`make_views`) and mix_generator the i-Mix generator, both seeded per process.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    accelerator: Accelerator
    augment: Any
    mix_generator: torch.Generator
    sums: RunningSums


def save_training_checkpoint(
    run_dir: Path,
    state: TrainingState,
    *,
    config: PretrainConfig,
    task: TrainingTask,
    meta: dict[str, Any],
    keep_last: int | None,
) -> Path:
    """Write checkpoint-{meta["step"]}/ from every process (see `checkpoint.save_checkpoint`):
    config.yaml, backbone.pt, the task's files, training_state.pt, each process's
    rank_state-{r}.pt (RNG streams + running sums), and meta.json last (`meta` plus the size and
    SHA-256 of every other file). Returns the folder."""
    accelerator, model = state.accelerator, state.model

    def write_shared(folder: Path) -> None:
        # fsync: a checkpoint that claims to be complete must survive a power cut.
        write_text_atomic(folder / CONFIG_FILE, config_to_yaml(config), fsync=True)
        save_torch_atomic(model.backbone.state_dict(), folder / BACKBONE_FILE, fsync=True)
        for name, obj in task.checkpoint_files(model).items():
            save_torch_atomic(obj, folder / name, fsync=True)
        training_state = {
            "model": model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
        }
        save_torch_atomic(training_state, folder / STATE_FILE, fsync=True)

    rank_state = {
        **capture_rng_state(state.augment, state.mix_generator),
        "loop": state.sums.state_dict(),
    }
    return ckpt.save_checkpoint(
        run_dir,
        int(meta["step"]),
        write_shared=write_shared,
        rank_state=rank_state,
        rank=accelerator.process_index,
        is_main=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        keep_last=keep_last,
        meta=meta,  # meta.json, last, with the size and SHA-256 of every other file
    )


def restore_training_state(
    checkpoint: Path, meta: dict[str, Any], state: TrainingState
) -> Position:
    """Load `checkpoint` into `state` (this process's part) and return where the run stood; says
    "resuming from checkpoint-N (epoch E, batch B)" on stderr (main process).

    A file that cannot be read (empty, truncated, damaged) is a ValueError naming it. The LR
    schedule's shape stays this run's (train.epochs may have changed); only its position is
    restored.
    """
    accelerator = state.accelerator
    device = accelerator.device
    # torch.load does not parse indexed CPU devices ("cpu:0", as accelerate names them under gloo).
    location = "cpu" if device.type == "cpu" else device
    saved = load_torch_file(checkpoint / STATE_FILE, map_location=location)
    if not isinstance(saved, dict) or not {"model", "optimizer", "scheduler"} <= set(saved):
        raise ValueError(
            f"checkpoint file {str(checkpoint / STATE_FILE)!r} does not hold a training state "
            "(a mapping with model, optimizer and scheduler)"
        )
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    scheduler_state = dict(saved["scheduler"])
    scheduler_state["lr_lambdas"] = [None] * len(scheduler_state.get("lr_lambdas", []))
    state.scheduler.load_state_dict(scheduler_state)
    if accelerator.scaler is not None and saved.get("scaler") is not None:
        accelerator.scaler.load_state_dict(saved["scaler"])
    rank_file = checkpoint / rank_state_file(accelerator.process_index)
    rank_state = load_torch_file(rank_file, map_location="cpu")
    if not isinstance(rank_state, dict):
        raise ValueError(f"checkpoint file {str(rank_file)!r} does not hold a process's state")
    restore_rng_state(rank_state, state.augment, state.mix_generator)
    if "loop" in rank_state:
        # Back on the device the batches' values are summed on (saved from it, loaded to the CPU).
        state.sums.load_state_dict(rank_state["loop"], location)
    position = Position(int(meta["step"]), int(meta["epoch"]), int(meta["batch_in_epoch"]))
    if accelerator.is_main_process:
        print(
            f"resuming from {checkpoint.name} (epoch {position.epoch}, batch "
            f"{position.batch_in_epoch}) in {str(checkpoint.parent)!r}",
            file=sys.stderr,
            flush=True,
        )
    return position
