"""The training loop pretraining and joint training share: `run_training(config, task)`.

It reads top to bottom: the output dir's lock and the stop requests, the checkpoint to resume and
the data, the model and its optimizer, the resumed state, the outputs, then every step (forward/
backward, optimizer step, epoch end, metrics row, checkpoint, stop). Helpers: the sibling modules.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrastkit.pipelines import checkpoint as ckpt
from contrastkit.pipelines.config import PretrainConfig, save_config
from contrastkit.pipelines.data import AUGMENT_DATASET, InMemoryDataset
from contrastkit.pipelines.evaluation.features import identity_transform
from contrastkit.pipelines.metrics import MetricsLogger
from contrastkit.pipelines.run_files import CONFIG_FILE, CURVES_FILE
from contrastkit.pipelines.training.accelerator import make_accelerator
from contrastkit.pipelines.training.model import build_training_state
from contrastkit.pipelines.training.monitor import monitor_metrics
from contrastkit.pipelines.training.nonfinite import check_finite_loss, check_finite_parameters
from contrastkit.pipelines.training.resume import (
    Position,
    TrainingState,
    check_resumable,
    check_same_steps_per_epoch,
    find_resume_checkpoint,
    restore_training_state,
    save_training_checkpoint,
)
from contrastkit.pipelines.training.run_data import RunData, prepare_data, resolve_backbone_kwargs
from contrastkit.pipelines.training.run_lock import hold_run_dir
from contrastkit.pipelines.training.stop import StopRequest, stop_requests
from contrastkit.pipelines.training.task import EpochEnd, TrainingResult, TrainingTask


@dataclass
class _Run:
    """One process's run: what every step reads, and the counters it moves."""

    config: PretrainConfig
    task: TrainingTask
    run_dir: Path
    data: RunData
    model: nn.Module  # as accelerate prepared it (DDP-wrapped with several processes)
    state: TrainingState  # the unwrapped model, optimizer, schedule, random streams, sums
    channels_last: bool  # views in channels_last memory format
    transform: Callable[[Tensor], Tensor]  # uint8 batch -> normalized evaluation view
    steps_per_epoch: int  # optimizer steps per epoch
    global_batch: int  # samples per optimizer step, all processes and micro-batches together
    logger: MetricsLogger | None  # main process only
    step: int  # optimizer steps done
    last_checkpoint: Path | None
    nonfinite: Tensor  # () bool: a loss since the last check was not finite
    run_start: float = field(default_factory=time.perf_counter)
    log_time: float = field(default_factory=time.perf_counter)  # when the last row was written

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.train.epochs

    @property
    def batches_used(self) -> int:
        """Batches per epoch that make whole optimizer steps (the rest of an epoch is skipped)."""
        return self.steps_per_epoch * self.config.train.grad_accum


def run_training(
    config: PretrainConfig,
    task: TrainingTask,
    *,
    resume: str | Path | None = None,
    train_data: InMemoryDataset | None = None,
    test_data: InMemoryDataset | None = None,
) -> TrainingResult:
    """Run (or resume) `task`'s training as `config` says, on every process of the launch.

    resume: None (a new run; refused if the output dir already holds checkpoints), "latest" (the
        newest checkpoint in train.output_dir, or a new run when there is none), or a checkpoint
        folder / run directory.
    train_data, test_data: in-memory datasets to use instead of loading data.dataset from
        data.data_dir (test_data feeds the kNN monitor and the task's validation);
        data.train_subset still applies.

    The main process holds the output dir's run lock throughout. SIGTERM / SIGINT / SIGHUP or the
    launcher's exit end the run after the current step and its checkpoint (result.stopped_by).
    Resuming a checkpoint that completed train.epochs returns after the resume checks, having
    written nothing.

    Raises ValueError / FileNotFoundError for bad config, data or checkpoint inputs, or another
    run holding the output dir (run_lock.RunLocked), before anything is written;
    NonFiniteLossError when the loss stops being finite.
    """
    accelerator = make_accelerator(config.train.grad_accum)
    run_dir = Path(config.train.output_dir).expanduser()
    world_size, is_main = accelerator.num_processes, accelerator.is_main_process
    with (
        hold_run_dir(run_dir, is_main=is_main, world_size=world_size),
        stop_requests(world_size) as stop,
    ):
        # -------------------------------------------- the checkpoint to resume, data, step counts
        checkpoint = find_resume_checkpoint(resume, run_dir)
        need_test = task.needs_test_split(config)
        data = prepare_data(config, accelerator, train_data, test_data, need_test=need_test)
        resolve_backbone_kwargs(config, data.in_features)
        meta: dict[str, Any] = {}
        if checkpoint is not None:
            meta = check_resumable(checkpoint, config, world_size)
        steps_per_epoch = _steps_per_epoch(data.batches.batches_per_epoch, config.train.grad_accum)
        if checkpoint is not None:
            check_same_steps_per_epoch(checkpoint, meta, steps_per_epoch)
            if int(meta["step"]) >= steps_per_epoch * config.train.epochs:
                return _already_finished(checkpoint, meta, run_dir, is_main)
        inputs = (config, task, accelerator, run_dir, data, checkpoint, meta, steps_per_epoch)
        run, position = _prepare(*inputs)
        return _train(run, position, stop)


def _already_finished(
    checkpoint: Path, meta: dict[str, Any], run_dir: Path, is_main: bool
) -> TrainingResult:
    """Resuming a checkpoint that completed train.epochs: say so; nothing is written."""
    step, epoch = int(meta["step"]), int(meta["epoch"])
    if is_main:
        print(
            f"{checkpoint.name}: already finished at step {step} (epoch {epoch}); nothing to do "
            "(to train on, resume with a larger train.epochs)",
            file=sys.stderr,
            flush=True,
        )
    return TrainingResult(run_dir, step, epoch, checkpoint)


def _prepare(
    config: PretrainConfig,
    task: TrainingTask,
    accelerator: Accelerator,
    run_dir: Path,
    data: RunData,
    checkpoint: Path | None,
    meta: dict[str, Any],
    steps_per_epoch: int,
) -> tuple[_Run, Position]:
    """What the steps need: the model and its optimizer, the state resumed from `checkpoint`
    (whose meta.json is `meta`), the outputs (main process). Returns the run and where it starts."""
    train = config.train
    # ------------------------------------------------ model, optimizer, schedule, random streams
    set_seed(train.seed)
    model, state = build_training_state(
        config, task, data.num_classes, accelerator, steps_per_epoch
    )
    channels_last = config.model.channels_last and data.kind == "image"
    size = config.data.image_size or 1
    transform = identity_transform(AUGMENT_DATASET[config.data.dataset], size, channels_last)

    # ------------------------------------------------ the resumed state, the outputs
    position = Position()
    if checkpoint is not None:
        position = restore_training_state(checkpoint, meta, state)
    logger = None
    if accelerator.is_main_process:
        resumed = position if checkpoint is not None else None
        logger = _start_outputs(config, task, run_dir, resumed)
    accelerator.wait_for_everyone()

    run = _Run(
        config=config,
        task=task,
        run_dir=run_dir,
        data=data,
        model=model,
        state=state,
        channels_last=channels_last,
        transform=transform,
        steps_per_epoch=steps_per_epoch,
        global_batch=train.batch_size * accelerator.num_processes * train.grad_accum,
        logger=logger,
        step=position.step,
        last_checkpoint=checkpoint,
        nonfinite=torch.zeros((), dtype=torch.bool, device=accelerator.device),
    )
    return run, position


def _steps_per_epoch(batches_per_epoch: int, grad_accum: int) -> int:
    """Optimizer steps per epoch: whole groups of grad_accum batches (at least one)."""
    if batches_per_epoch // grad_accum < 1:
        raise ValueError(
            f"one epoch gives {batches_per_epoch} batches per process, fewer than "
            f"train.grad_accum={grad_accum}: lower grad_accum or batch_size"
        )
    return batches_per_epoch // grad_accum


def _start_outputs(
    config: PretrainConfig, task: TrainingTask, run_dir: Path, resumed: Position | None
) -> MetricsLogger:
    """Main process, before the first step: a clean run dir, config.yaml, the metrics log (cut
    back to the resumed step), and the task's start."""
    ckpt.remove_stale_temporaries(run_dir)
    save_config(config, run_dir / CONFIG_FILE)
    logger = MetricsLogger(
        run_dir,
        resume_step=resumed.step if resumed is not None else None,
        columns=task.metric_columns,
        tensorboard_prefix=task.name,
    )
    task.start(config, run_dir, resumed.epoch if resumed is not None else None)
    return logger


def _train(run: _Run, start: Position, stop: StopRequest) -> TrainingResult:
    """The steps from `start` to train.epochs, with a progress bar."""
    accelerator, train = run.state.accelerator, run.config.train
    bar = tqdm(
        total=run.total_steps,
        initial=run.step,
        desc=run.task.progress_label(run.config),
        disable=not (accelerator.is_main_process and train.progress_bar),
        dynamic_ncols=True,
    )
    try:
        return _steps(run, start, stop, bar)
    finally:
        bar.close()
        if run.logger is not None:
            run.logger.close()


def _steps(run: _Run, start: Position, stop: StopRequest, bar: tqdm) -> TrainingResult:
    """Every step of the run; returns early (after a checkpoint) when a stop is requested."""
    train, state, model = run.config.train, run.state, run.model
    accelerator, sums = state.accelerator, state.sums
    reason = stop.agreed()
    if reason is not None:  # asked to stop while the data loaded: no step to save
        return TrainingResult(run.run_dir, run.step, start.epoch, run.last_checkpoint, reason)
    model.train()
    for epoch in range(start.epoch, train.epochs):
        first = start.batch_in_epoch if epoch == start.epoch else 0
        batches = run.data.batches.epoch(epoch, first)
        for batch_index, (inputs, labels) in enumerate(batches, start=first):
            if batch_index >= run.batches_used:
                break
            # -------------------------------------------- forward and backward of one micro-batch
            with accelerator.accumulate(model):
                views = state.augment(inputs)
                if run.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                micro_step = run.step * train.grad_accum + batch_index % train.grad_accum
                out = model(
                    views, labels, step=micro_step, epoch=epoch, generator=state.mix_generator
                )
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    state.model.after_backward(epoch)
                if accelerator.sync_gradients and train.clip_grad is not None:
                    accelerator.clip_grad_norm_(model.parameters(), train.clip_grad)
                state.optimizer.step()
                state.optimizer.zero_grad(set_to_none=True)
            sums.add(out.logged(), train.grad_accum)
            run.nonfinite |= ~torch.isfinite(out.loss.detach())
            if not accelerator.sync_gradients:
                continue  # accumulating: the optimizer step comes with a later micro-batch

            # -------------------------------------------- after the optimizer step
            lr = state.scheduler.get_last_lr()[0]
            state.scheduler.step()
            state.model.on_optimizer_step(run.step, run.total_steps)
            run.step += 1
            sums.step_done()
            bar.update(1)
            end_of_epoch = batch_index + 1 == run.batches_used
            log_due = run.step % train.log_every == 0
            periodic = bool(train.checkpoint_every) and run.step % train.checkpoint_every == 0
            # All stop after the same step; other steps read nothing back and make no collective.
            reason = stop.agreed(sync_point=log_due or end_of_epoch or periodic)

            # -------------------------------------------- epoch end, metrics row, checkpoint
            end, row = _end_epoch(run, epoch, lr) if end_of_epoch else (None, {})
            if log_due or end_of_epoch or reason:
                _log_row(run, row, lr, bar)
            if end is not None and run.logger is not None:
                _plot_curves(run.logger.path, run.run_dir / CURVES_FILE, run.data.num_classes)
                run.task.epoch_done(end, row)
            next_batch = (epoch + 1, 0) if end_of_epoch else (epoch, batch_index + 1)
            position = Position(run.step, *next_batch)  # where a checkpoint of this step resumes
            if periodic or end_of_epoch or reason:
                _save(run, position)
            if reason is not None:
                return TrainingResult(
                    run.run_dir, run.step, position.epoch, run.last_checkpoint, reason
                )
    return TrainingResult(run.run_dir, run.step, train.epochs, run.last_checkpoint)


def _end_epoch(run: _Run, epoch: int, lr: float) -> tuple[EpochEnd, dict[str, Any]]:
    """The epoch's means (every process), then the monitor and the task's evaluation (main
    process): the EpochEnd the task sees, and the columns they add to the epoch's row."""
    check_finite_loss(run.state.accelerator, run.nonfinite, run.step, run.last_checkpoint)
    accelerator, train = run.state.accelerator, run.config.train
    end = EpochEnd(
        model=run.state.model,
        config=run.config,
        run_dir=run.run_dir,
        epoch=epoch + 1,
        step=run.step,
        lr=lr,
        train_means=run.state.sums.epoch_means(accelerator, run.steps_per_epoch),
        test=run.data.knn_test,
        transform=run.transform,
        accelerator=accelerator,
        elapsed_s=time.perf_counter() - run.run_start,
    )
    row: dict[str, Any] = {}
    if accelerator.is_main_process:
        knn_due = train.knn_every and (epoch + 1) % train.knn_every == 0
        if knn_due and run.data.knn_test is not None:
            row.update(
                monitor_metrics(run.state.model, run.data, run.config, accelerator, run.transform)
            )
        row.update(run.task.evaluate(end))
    accelerator.wait_for_everyone()
    return end, row


def _log_row(run: _Run, row: dict[str, Any], lr: float, bar: tqdm) -> None:
    """Complete `row` with the window's means (every process) and write it (main process)."""
    sums = run.state.sums
    steps_in_log = sums.steps_in_log
    means = sums.window_means(run.state.accelerator)
    if not all(math.isfinite(value) for value in means.values()):
        check_finite_loss(run.state.accelerator, run.nonfinite, run.step, run.last_checkpoint)
    now = time.perf_counter()
    images_per_s = steps_in_log * run.global_batch / max(now - run.log_time, 1e-9)
    row.update(
        step=run.step,
        epoch=round(run.step / run.steps_per_epoch, 6),
        lr=lr,
        images_per_s=round(images_per_s, 2),
        elapsed_s=round(now - run.run_start, 3),
        **means,
    )
    if run.logger is not None:
        run.logger.log(row)
        bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.3g}", img_s=f"{images_per_s:.0f}")
    sums.start_window()
    run.log_time = now


def _save(run: _Run, position: Position) -> None:
    """Checkpoint `position` (every process), after checking that nothing went non-finite."""
    check_finite_loss(run.state.accelerator, run.nonfinite, run.step, run.last_checkpoint)
    check_finite_parameters(run.state.model, run.step, run.last_checkpoint)
    config, state = run.config, run.state
    meta = {
        "task": run.task.name,
        "step": position.step,
        "epoch": position.epoch,
        "batch_in_epoch": position.batch_in_epoch,
        "steps_per_epoch": run.steps_per_epoch,
        "total_steps": run.total_steps,
        "method": config.method.name,
        "backbone": config.model.backbone,
        "backbone_kwargs": config.model.backbone_kwargs,
        "num_features": int(state.model.backbone.num_features),
        "num_classes": run.data.num_classes,
        "world_size": state.accelerator.num_processes,
        "global_batch": run.global_batch,
        "mixed_precision": state.accelerator.mixed_precision,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **run.task.checkpoint_meta(config),
    }
    run.last_checkpoint = save_training_checkpoint(
        run.run_dir,
        state,
        config=config,
        task=run.task,
        meta=meta,
        keep_last=config.train.keep_last,
    )


def _plot_curves(metrics_csv: Path, out_png: Path, num_classes: int | None) -> None:
    # Imported here: matplotlib takes about a second to import and only the main process plots.
    from contrastkit.pipelines.plots import plot_pretrain_curves

    known = num_classes if num_classes is not None and num_classes >= 2 else None
    plot_pretrain_curves(metrics_csv, out_png, num_classes=known)
