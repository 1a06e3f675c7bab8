"""Building what a run trains: the configured backbone inside the task's module with the run-wide
options (SyncBatchNorm across processes, channels_last, torch.compile), then its optimizer, LR
schedule and per-process random streams."""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator
from torch import nn

from contrastkit.augment import make_views
from contrastkit.backbones import create_backbone
from contrastkit.pipelines.config import PretrainConfig
from contrastkit.pipelines.data import AUGMENT_DATASET
from contrastkit.pipelines.optim import build_optimizer, build_scheduler, scaled_lr
from contrastkit.pipelines.training.resume import TrainingState
from contrastkit.pipelines.training.running_sums import RunningSums
from contrastkit.pipelines.training.task import TrainingTask


def convert_sync_bn(module: nn.Module) -> None:
    """BatchNorm -> SyncBatchNorm in every child of `module`, except EMA teachers: a teacher with
    shuffle-BN (MoCo, ISD) must keep per-process statistics."""
    for name, child in list(module.named_children()):
        if name == "teacher":
            continue
        if any(inner == "teacher" for inner, _ in child.named_children()):
            convert_sync_bn(child)
        else:
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))


def build_model(
    config: PretrainConfig,
    task: TrainingTask,
    num_classes: int,
    world_size: int,
    device: torch.device,
) -> nn.Module:
    """The task's model around a fresh model.backbone (on the CPU; accelerate moves it).

    Call it after seeding: the backbone's and heads' initial weights come from the global RNG.
    """
    model_cfg = config.model
    backbone = create_backbone(model_cfg.backbone, **model_cfg.backbone_kwargs)
    model = task.build_model(config, backbone, num_classes)
    if model_cfg.sync_bn:
        if world_size > 1 and device.type == "cuda":
            convert_sync_bn(model)
        else:
            print(
                "note: model.sync_bn=true has no effect with one process or on the CPU",
                file=sys.stderr,
            )
    if model_cfg.channels_last and config.data.dataset != "tabular":
        model = model.to(memory_format=torch.channels_last)
    if model_cfg.compile:
        for module in model.backbones():
            module.compile()
    return model


def build_training_state(
    config: PretrainConfig,
    task: TrainingTask,
    num_classes: int,
    accelerator: Accelerator,
    steps_per_epoch: int,
) -> tuple[nn.Module, TrainingState]:
    """The model as accelerate prepared it (DDP-wrapped with several processes), and the state a
    checkpoint saves: the unwrapped model, the optimizer, the LR schedule, the per-process view
    pipeline and i-Mix generator, empty running sums. Call it right after seeding."""
    train, world = config.train, accelerator.num_processes
    model = build_model(config, task, num_classes, world, accelerator.device)
    peak_lr = scaled_lr(config.optimizer, train.batch_size * world * train.grad_accum)
    exclude = task.decay_exclusions(model)
    optimizer = build_optimizer(
        model,
        config.optimizer,
        peak_lr,
        exclude_from_decay=exclude,
        static_lr=task.static_lr_modules(model),
    )
    scheduler = build_scheduler(
        optimizer,
        config.optimizer,
        steps_per_epoch=steps_per_epoch,
        epochs=train.epochs,
        warmup_epochs=train.warmup_epochs,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    # Per-process random streams: each process draws its own views and i-Mix mixes.
    seed, rank = train.seed * 100_003, accelerator.process_index
    size, dataset = config.data.image_size or 1, AUGMENT_DATASET[config.data.dataset]
    augment = make_views(
        config.data.augment,
        size,
        dataset,
        seed=seed + 10_000 + rank,
        **config.data.augment_options,
    )
    mix_generator = torch.Generator(device=accelerator.device).manual_seed(seed + 20_000 + rank)
    plain_model = accelerator.unwrap_model(model)
    state = TrainingState(
        plain_model, optimizer, scheduler, accelerator, augment, mix_generator, RunningSums()
    )
    return model, state
