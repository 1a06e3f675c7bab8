"""The pretrain pipeline on accelerate: config -> data -> model -> loop -> checkpoints.

`accelerate launch packages/pipelines/pretrain.py --config CONFIG.yaml` (or `contrastkit-pretrain`)
runs `main`; `run_pretrain(config)` is the same run from Python. The loop is shared with joint
training (`joint.py`): a `TrainingTask` says what is trained and reported, the loop does the rest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrastkit.augment import make_views
from contrastkit.backbones import LinearClassifier, create_backbone
from contrastkit.pipelines import checkpoint as ckpt
from contrastkit.pipelines.config import (
    PretrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    read_config_file,
    save_config,
)
from contrastkit.pipelines.data import (
    AUGMENT_DATASET,
    DeviceBatches,
    ImageFolderDataset,
    InMemoryDataset,
    LoaderBatches,
    balanced_subset,
    load_dataset,
)
from contrastkit.pipelines.evaluation.features import extract_features
from contrastkit.pipelines.evaluation.knn import knn_accuracy
from contrastkit.pipelines.methods import PretrainMethod, build_method
from contrastkit.pipelines.metrics import METRIC_COLUMNS, MetricsLogger
from contrastkit.pipelines.optim import build_optimizer, build_scheduler, scaled_lr
from contrastkit.pipelines.training.accelerator import make_accelerator

CURVES_FILE = "curves.png"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped without checkpointing the bad state."""


@dataclass
class PretrainResult:
    """How a pretrain run ended.

    run_dir: the output directory. step: optimizer steps done. epoch: epochs completed.
    checkpoint: the last checkpoint folder written (None if none was). stopped_by: "SIGTERM" /
    "SIGINT" when a signal stopped the run early (a checkpoint was saved first), else None.
    """

    run_dir: Path
    step: int
    epoch: int
    checkpoint: Path | None
    stopped_by: str | None = None


@dataclass
class StepOutput:
    """One forward of PretrainModel: the loss to backpropagate and what the log needs."""

    loss: Tensor  # objective + online classifier cross-entropy
    ssl_loss: Tensor  # the method's objective alone (what metrics.csv logs as `loss`)
    online_correct: Tensor | None  # fraction of the batch the online classifier gets right

    def logged(self) -> dict[str, Tensor]:
        """metrics.csv column -> scalar of this batch; the loop averages them over logged steps."""
        values = {"loss": self.ssl_loss}
        if self.online_correct is not None:
            values["online_top1"] = 100.0 * self.online_correct
        return values


class PretrainModel(nn.Module):
    """The module accelerate prepares (and DDP wraps): the method plus the online linear classifier.

    The classifier (solo-learn's "online linear evaluation") reads the method's detached backbone
    features, so its cross-entropy trains only itself; i-Mix rows get mixed soft labels.
    """

    def __init__(self, method: PretrainMethod, classifier: nn.Module | None) -> None:
        super().__init__()
        self.method = method
        self.classifier = classifier

    @property
    def backbone(self) -> nn.Module:
        """The student backbone: what `backbone.pt` saves."""
        return self.method.backbone

    def backbones(self) -> list[nn.Module]:
        """Every backbone the forward runs: what `model.compile` compiles."""
        return self.method.backbones()

    def on_optimizer_step(self, step: int, total_steps: int) -> None:
        self.method.on_optimizer_step(step, total_steps)

    def forward(
        self,
        views: list[Tensor],
        labels: Tensor,
        *,
        step: int,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        out = self.method(views, step=step, generator=generator)
        if self.classifier is None:
            return StepOutput(out.loss, out.loss, None)
        num_classes = self.classifier.num_classes
        one_hot = F.one_hot(labels, num_classes).float()
        if out.label_weights is None:
            soft = one_hot.repeat(out.features.shape[0] // labels.shape[0], 1)
        else:
            soft = out.label_weights.float() @ one_hot
        logits = self.classifier(out.features).float()
        online_loss = -(soft * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        correct = (logits.argmax(dim=1) == soft.argmax(dim=1)).float().mean()
        return StepOutput(out.loss + online_loss, out.loss, correct)


# ---------------------------------------------------------------- what the loop trains


@dataclass
class EpochEnd:
    """What a task sees at the end of an epoch (main process only)."""

    model: nn.Module  # the unwrapped model (never the DDP wrapper)
    config: PretrainConfig
    run_dir: Path
    epoch: int  # epochs completed (1-based)
    step: int  # optimizer steps done
    lr: float  # learning rate of the epoch's last step
    train_means: dict[str, float]  # the model's logged values, mean over the epoch and processes
    test: InMemoryDataset | None  # the test split on the device (data.knn_test_subset applied)
    transform: Callable[[Tensor], Tensor]  # uint8 batch -> normalized evaluation view
    accelerator: Accelerator
    elapsed_s: float  # seconds since this process started the loop


class TrainingTask:
    """What the training loop trains and reports; this base class is self-supervised pretraining.

    `run_training(config, task)` owns the data, accelerate, the optimizer and schedule,
    checkpoints, exact resume, signals, the NaN stop, metrics.csv, the kNN monitor and
    curves.png, and calls the hooks below. The model `build_model` returns exposes `backbone`
    (saved as backbone.pt), `backbones()` (what model.compile compiles),
    `on_optimizer_step(step, total_steps)` and `forward(views, labels, *, step, generator)`
    returning an object with `.loss` (backpropagated) and `.logged()` (metrics.csv column ->
    scalar tensor of the batch; averaged over the logged steps and the epoch).
    """

    name = "pretrain"
    command = "contrastkit-pretrain"
    description = "Self-supervised pretraining (SimCLR, N-pair, MoCo v2, BYOL, ISD, with i-Mix) on accelerate."
    example = (
        "accelerate launch packages/pipelines/pretrain.py --config "
        "packages/pipelines/configs/simclr_cifar10.yaml optimizer.lr=0.3 data.train_subset=15000"
    )
    config_class: type[PretrainConfig] = PretrainConfig
    metric_columns: tuple[str, ...] = METRIC_COLUMNS

    def build_model(
        self, config: PretrainConfig, backbone: nn.Module, num_classes: int
    ) -> nn.Module:
        """The module to train around a fresh `backbone` (called after seeding, on the CPU)."""
        method = build_method(config, backbone)
        classifier = (
            LinearClassifier(method.num_features, num_classes)
            if config.train.online_linear
            else None
        )
        return PretrainModel(method, classifier)

    def decay_exclusions(self, model: nn.Module) -> list[nn.Module]:
        """Modules whose parameters get no weight decay (besides biases and norms)."""
        return [model.classifier] if model.classifier is not None else []

    def needs_test_split(self, config: PretrainConfig) -> bool:
        """Load the test split even when no kNN / online monitor asks for it."""
        return False

    def start(self, config: PretrainConfig, run_dir: Path, resumed_epoch: int | None) -> None:
        """Before the first step (main process); resumed_epoch: epochs the checkpoint completed."""

    def evaluate(self, end: EpochEnd) -> dict[str, Any]:
        """At an epoch end, before its metrics row is written: extra columns for that row."""
        return {}

    def epoch_done(self, end: EpochEnd, row: dict[str, Any]) -> None:
        """At an epoch end, after its metrics row and curves.png are written (main process)."""

    def checkpoint_files(self, model: nn.Module) -> dict[str, Any]:
        """Extra files of every checkpoint folder: name -> object for torch.save."""
        return {}

    def checkpoint_meta(self, config: PretrainConfig) -> dict[str, Any]:
        """Extra meta.json entries."""
        return {}


# ---------------------------------------------------------------- signals


class _StopRequest:
    """SIGTERM / SIGINT -> finish the current step, save a checkpoint, exit non-zero.

    A second signal aborts at once (KeyboardInterrupt), without saving. With several processes
    the decision is agreed on by an all-reduce over a CPU (gloo) group after every step, so all
    ranks stop after the same step even if the signal reached them at different times.
    """

    def __init__(self, world_size: int) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}
        self._group = None
        if world_size > 1:
            # A CPU group keeps the per-step agreement off the GPU stream (no device sync).
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        self._world_size = world_size

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:
            raise KeyboardInterrupt(
                f"second {signal.Signals(signum).name}: aborting without a checkpoint"
            )
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
            "(send it again to abort without saving)",
            file=sys.stderr,
            flush=True,
        )

    def agreed(self) -> int:
        """The signal number every rank agrees to stop for (0: keep going)."""
        if self._world_size == 1:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())


# ---------------------------------------------------------------- data


@dataclass
class _Data:
    batches: DeviceBatches | LoaderBatches
    kind: str  # "image" | "tabular"
    num_classes: int
    in_features: int | None
    knn_train: InMemoryDataset | None  # main process only, on the device
    knn_test: InMemoryDataset | None


def _load_split(config: PretrainConfig, split: str) -> InMemoryDataset:
    data = config.data
    return load_dataset(
        data.dataset,
        data.data_dir,
        split,
        image_size=data.image_size if data.dataset != "tabular" else None,
        download=data.download,
        **data.tabular_options,
    )


def _subset(dataset: InMemoryDataset, size: int | None, seed: int, what: str) -> InMemoryDataset:
    if size is None or size >= len(dataset):
        if size is not None and size > len(dataset):
            raise ValueError(
                f"data.{what}={size} is larger than the split ({len(dataset)} samples)"
            )
        return dataset
    return dataset.subset(balanced_subset(dataset.labels, size, seed))


def _prepare_data(
    config: PretrainConfig,
    accelerator: Accelerator,
    train_data: InMemoryDataset | None,
    test_data: InMemoryDataset | None,
    *,
    need_test: bool = False,
) -> _Data:
    """need_test: load the test split (main process) even without a kNN / online monitor; a
    missing test split is then an error instead of a warning."""
    data, train = config.data, config.train
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    monitor = accelerator.is_main_process and (train.knn_every > 0 or train.online_linear)
    need_test = need_test and accelerator.is_main_process
    knn_train = None
    if data.loader == "dataloader" and train_data is None:
        folder = ImageFolderDataset(data.data_dir, data.image_size, split="train")
        labels = folder.labels
        indices = (
            balanced_subset(labels, data.train_subset, train.seed)
            if data.train_subset is not None and data.train_subset < len(folder)
            else None
        )
        dataset: Any = (
            torch.utils.data.Subset(folder, indices.tolist()) if indices is not None else folder
        )
        batches: DeviceBatches | LoaderBatches = LoaderBatches(
            dataset,
            train.batch_size,
            seed=train.seed,
            rank=rank,
            world_size=world,
            device=device,
            num_workers=data.num_workers,
        )
        kind, num_classes, in_features = "image", folder.num_classes, None
        if monitor:
            pool = indices if indices is not None else torch.arange(len(folder))
            size = data.knn_train_subset
            if size is not None and size < len(pool):
                pool = pool[balanced_subset(labels[pool], size, train.seed)]
            images = torch.stack([folder[int(i)][0] for i in pool])
            knn_train = InMemoryDataset(images, labels[pool].clone(), list(folder.classes), "image")
    else:
        full = train_data if train_data is not None else _load_split(config, "train")
        subset = _subset(full, data.train_subset, train.seed, "train_subset")
        batches = DeviceBatches(
            subset, train.batch_size, seed=train.seed, rank=rank, world_size=world, device=device
        )
        kind, num_classes = subset.kind, subset.num_classes
        in_features = subset.inputs.shape[1] if subset.kind == "tabular" else None
        if monitor:
            knn_train = _subset(subset, data.knn_train_subset, train.seed, "knn_train_subset")
    knn_test = None
    if monitor or need_test:
        if test_data is None:
            try:
                test_data = _load_split(config, "test")
            except (FileNotFoundError, ValueError) as error:
                if need_test:
                    raise type(error)(
                        f"this run validates on the test split, which could not be loaded: {error}"
                    ) from None
                print(
                    f"warning: no test split for the kNN / online-linear monitor ({error}); monitoring is off",
                    file=sys.stderr,
                )
        if test_data is not None:
            knn_test = _subset(test_data, data.knn_test_subset, train.seed, "knn_test_subset")
            knn_test = knn_test.to(device)
            knn_train = knn_train.to(device) if knn_train is not None else None
        else:
            knn_train = None
    return _Data(batches, kind, num_classes, in_features, knn_train, knn_test)


def _resolve_backbone_kwargs(config: PretrainConfig, in_features: int | None) -> None:
    """Tabular runs: fill model.backbone_kwargs.in_features from the data (checked if given)."""
    if in_features is None:
        return
    kwargs = config.model.backbone_kwargs
    given = kwargs.get("in_features")
    if given is None:
        kwargs["in_features"] = in_features
    elif given != in_features:
        raise ValueError(
            f"model.backbone_kwargs.in_features={given} but the data has {in_features} feature columns"
        )


# ---------------------------------------------------------------- model


def _convert_sync_bn(module: nn.Module) -> None:
    """BatchNorm -> SyncBatchNorm in every child of `module`, except EMA teachers: a teacher with
    shuffle-BN (MoCo, ISD) must keep per-process statistics."""
    for name, child in list(module.named_children()):
        if name == "teacher":
            continue
        if any(inner == "teacher" for inner, _ in child.named_children()):
            _convert_sync_bn(child)
        else:
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))


def _build_model(
    config: PretrainConfig,
    task: TrainingTask,
    num_classes: int,
    world_size: int,
    device: torch.device,
) -> nn.Module:
    model_cfg = config.model
    backbone = create_backbone(model_cfg.backbone, **model_cfg.backbone_kwargs)
    model = task.build_model(config, backbone, num_classes)
    if model_cfg.sync_bn:
        if world_size > 1 and device.type == "cuda":
            _convert_sync_bn(model)
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


# ---------------------------------------------------------------- checkpoint state


def _rng_state(augment: Any, mix_generator: torch.Generator) -> dict[str, Any]:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "augment": augment.state_dict(),
        "mix_generator": mix_generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: dict[str, Any], augment: Any, mix_generator: torch.Generator) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    augment.load_state_dict(state["augment"])
    mix_generator.set_state(state["mix_generator"])


def _resume_checkpoint(resume: str | Path | None, run_dir: Path) -> Path | None:
    if resume is None:
        existing = ckpt.latest_checkpoint(run_dir)
        if existing is not None:
            raise ValueError(
                f"output dir {str(run_dir)!r} already holds checkpoints (latest {existing.name}); "
                "pass --resume latest to continue that run, or choose another --output-dir"
            )
        return None
    if str(resume) == "latest":
        found = ckpt.latest_checkpoint(run_dir)
        if found is None:
            print(
                f"--resume latest: no checkpoint in {str(run_dir)!r} yet; starting a new run",
                file=sys.stderr,
            )
        return found
    return ckpt.resolve_checkpoint(resume)


def _read_checkpoint_config(checkpoint: Path) -> dict[str, Any]:
    return read_config_file(checkpoint / ckpt.CONFIG_FILE)


# ---------------------------------------------------------------- the run


def _plot_curves(metrics_csv: Path, out_png: Path) -> None:
    # Imported here: matplotlib takes about a second to import and only the main process plots.
    from contrastkit.pipelines.plots import plot_pretrain_curves

    plot_pretrain_curves(metrics_csv, out_png)


def _eval_transform(eval_view: Any, channels_last: bool) -> Callable[[Tensor], Tensor]:
    """uint8 batch -> the normalized evaluation view, in the model's memory format."""

    def transform(x: Tensor) -> Tensor:
        view = eval_view(x)[0]
        return view.contiguous(memory_format=torch.channels_last) if channels_last else view

    return transform


def _monitor(
    model: nn.Module,
    data: _Data,
    config: PretrainConfig,
    accelerator: Accelerator,
    eval_view: Any,
    channels_last: bool,
) -> dict[str, float]:
    """kNN top-1/top-5 (and the online classifier's test top-1) on the test split; main process only."""
    assert data.knn_train is not None and data.knn_test is not None
    backbone = model.backbone
    transform = _eval_transform(eval_view, channels_last)

    with accelerator.autocast():
        train_features = extract_features(backbone, data.knn_train.inputs, transform=transform)
        test_features = extract_features(backbone, data.knn_test.inputs, transform=transform)
    result: dict[str, float] = {}
    if config.train.knn_every > 0:
        k = min(config.train.knn_k, len(train_features))
        accuracy = knn_accuracy(
            train_features.float(),
            data.knn_train.labels,
            test_features.float(),
            data.knn_test.labels,
            data.num_classes,
            k=k,
            temperature=config.train.knn_temperature,
        )
        result["knn_top1"], result["knn_top5"] = accuracy["top1"], accuracy["top5"]
    if config.train.online_linear:
        with torch.no_grad():
            predicted = model.classifier(test_features.float()).argmax(dim=1)
        result["online_test_top1"] = (
            100.0 * (predicted == data.knn_test.labels).float().mean().item()
        )
    return result


def run_pretrain(
    config: PretrainConfig,
    *,
    resume: str | Path | None = None,
    train_data: InMemoryDataset | None = None,
    test_data: InMemoryDataset | None = None,
) -> PretrainResult:
    """Run (or resume) self-supervised pretraining as `config` says, on every process of the launch.

    resume: None (a new run; refused if the output dir already holds checkpoints), "latest" (the
        newest checkpoint in train.output_dir, or a new run when there is none), or a checkpoint
        folder / run directory.
    train_data, test_data: in-memory datasets to use instead of loading data.dataset from
        data.data_dir (test_data feeds the kNN monitor); data.train_subset still applies.

    Raises ValueError / FileNotFoundError for bad config, data or checkpoint inputs (before
    anything is written), NonFiniteLossError when the loss stops being finite.
    """
    return run_training(
        config, TrainingTask(), resume=resume, train_data=train_data, test_data=test_data
    )


def run_training(
    config: PretrainConfig,
    task: TrainingTask,
    *,
    resume: str | Path | None = None,
    train_data: InMemoryDataset | None = None,
    test_data: InMemoryDataset | None = None,
) -> PretrainResult:
    """The training loop shared by pretraining (`run_pretrain`) and joint training: `task` says
    what is trained and reported; arguments, errors and result as in `run_pretrain`."""
    accelerator = make_accelerator(config.train.grad_accum)
    is_main, rank, world = (
        accelerator.is_main_process,
        accelerator.process_index,
        accelerator.num_processes,
    )
    run_dir = Path(config.train.output_dir)
    checkpoint = _resume_checkpoint(resume, run_dir)

    data = _prepare_data(
        config, accelerator, train_data, test_data, need_test=task.needs_test_split(config)
    )
    _resolve_backbone_kwargs(config, data.in_features)
    meta: dict[str, Any] = {}
    if checkpoint is not None:
        meta = ckpt.read_meta(checkpoint)
        ckpt.check_resume_compatible(
            checkpoint,
            _read_checkpoint_config(checkpoint),
            config_to_dict(config),
            checkpoint_world_size=int(meta.get("world_size", 1)),
            world_size=world,
        )

    train = config.train
    steps_per_epoch = data.batches.batches_per_epoch // train.grad_accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"one epoch gives {data.batches.batches_per_epoch} batches per process, fewer than "
            f"train.grad_accum={train.grad_accum}: lower grad_accum or batch_size"
        )
    if (
        checkpoint is not None
        and int(meta.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch
    ):
        raise ValueError(
            f"cannot resume from {str(checkpoint)!r}: it was written with "
            f"{meta['steps_per_epoch']} steps per epoch, this run's data gives {steps_per_epoch} "
            "(the training data changed); nothing was written"
        )
    batches_used = steps_per_epoch * train.grad_accum
    total_steps = steps_per_epoch * train.epochs
    warmup_steps = min(round(train.warmup_epochs * steps_per_epoch), total_steps)
    global_batch = train.batch_size * world * train.grad_accum
    peak_lr = scaled_lr(config.optimizer, global_batch)

    set_seed(train.seed)
    model = _build_model(config, task, data.num_classes, world, accelerator.device)
    optimizer = build_optimizer(
        model, config.optimizer, peak_lr, exclude_from_decay=task.decay_exclusions(model)
    )
    scheduler = build_scheduler(
        optimizer, warmup_steps, total_steps, config.optimizer.final_lr_fraction
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    plain_model = accelerator.unwrap_model(model)
    device = accelerator.device

    augment_dataset = AUGMENT_DATASET[config.data.dataset]
    size = config.data.image_size or 1
    augment = make_views(
        config.data.augment, size, augment_dataset, seed=train.seed * 100_003 + 10_000 + rank
    )
    eval_view = make_views("identity", size, augment_dataset, seed=0)
    mix_generator = torch.Generator(device=device).manual_seed(train.seed * 100_003 + 20_000 + rank)
    channels_last = config.model.channels_last and data.kind == "image"
    eval_transform = _eval_transform(eval_view, channels_last)

    global_step, start_epoch, start_batch = 0, 0, 0
    # The running sums of the current metrics row (window) and epoch, per process: saved in every
    # checkpoint, so a resumed run's rows and epoch means are those of an uninterrupted run.
    loop: dict[str, Any] = {"keys": None, "window": None, "steps_in_log": 0, "epoch_sums": None}
    if checkpoint is not None:
        # torch.load does not parse indexed CPU devices ("cpu:0", as accelerate names them under gloo).
        location = "cpu" if device.type == "cpu" else device
        state = torch.load(checkpoint / ckpt.STATE_FILE, map_location=location, weights_only=True)
        plain_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        # Keep this run's schedule (train.epochs may have changed); restore only the position.
        scheduler_state = dict(state["scheduler"])
        scheduler_state["lr_lambdas"] = [None] * len(scheduler_state.get("lr_lambdas", []))
        scheduler.load_state_dict(scheduler_state)
        if accelerator.scaler is not None and state.get("scaler") is not None:
            accelerator.scaler.load_state_dict(state["scaler"])
        rank_state = torch.load(
            checkpoint / ckpt.rank_state_file(rank), map_location="cpu", weights_only=True
        )
        _restore_rng_state(rank_state, augment, mix_generator)
        loop = rank_state.get("loop", loop)
        global_step, start_epoch, start_batch = (
            int(meta["step"]),
            int(meta["epoch"]),
            int(meta["batch_in_epoch"]),
        )

    if is_main:
        ckpt.remove_stale_temporaries(run_dir)
        save_config(config, run_dir / ckpt.CONFIG_FILE)
        logger = MetricsLogger(
            run_dir,
            resume_step=global_step if checkpoint is not None else None,
            columns=task.metric_columns,
            tensorboard_prefix=task.name,
        )
        task.start(config, run_dir, start_epoch if checkpoint is not None else None)
    accelerator.wait_for_everyone()

    def save(step: int, epoch: int, batch_in_epoch: int) -> Path:
        def write_shared(folder: Path) -> None:
            ckpt.write_text_file(config_to_yaml(config), folder / ckpt.CONFIG_FILE)
            ckpt.save_tensor_file(plain_model.backbone.state_dict(), folder / ckpt.BACKBONE_FILE)
            for name, obj in task.checkpoint_files(plain_model).items():
                ckpt.save_tensor_file(obj, folder / name)
            ckpt.save_tensor_file(
                {
                    "model": plain_model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": accelerator.scaler.state_dict()
                    if accelerator.scaler is not None
                    else None,
                },
                folder / ckpt.STATE_FILE,
            )
            meta_out = {
                "task": task.name,
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps,
                "method": config.method.name,
                "backbone": config.model.backbone,
                "backbone_kwargs": config.model.backbone_kwargs,
                "num_features": int(plain_model.backbone.num_features),
                "num_classes": data.num_classes,
                "world_size": world,
                "global_batch": global_batch,
                "mixed_precision": accelerator.mixed_precision,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                **task.checkpoint_meta(config),
            }
            ckpt.write_text_file(json.dumps(meta_out, indent=2) + "\n", folder / ckpt.META_FILE)

        return ckpt.save_checkpoint(
            run_dir,
            step,
            write_shared=write_shared,
            rank_state={**_rng_state(augment, mix_generator), "loop": loop},
            rank=rank,
            is_main=is_main,
            barrier=accelerator.wait_for_everyone,
            keep_last=train.keep_last,
        )

    stop = _StopRequest(world)
    stop.install()
    bar = tqdm(
        total=total_steps,
        initial=global_step,
        desc=f"{task.name} {config.method.name}",
        disable=not (is_main and train.progress_bar),
        dynamic_ncols=True,
    )
    last_checkpoint = checkpoint
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    log_time, run_start = time.perf_counter(), time.perf_counter()
    epoch = start_epoch

    def check_finite(step: int) -> None:
        bad = accelerator.reduce(nonfinite.float(), reduction="sum")
        if bad.item() > 0:
            raise NonFiniteLossError(
                f"the loss became NaN or infinite at or before step {step}; stopping without "
                f"checkpointing this state (the last good checkpoint is {last_checkpoint}). "
                "Try a lower optimizer.lr, train.clip_grad, or bf16 instead of fp16."
            )

    def check_parameters(step: int) -> None:
        # A finite loss can still leave inf/NaN weights behind (an exploding update): never save those.
        finite = torch.stack([p.isfinite().all() for p in plain_model.parameters()]).all()
        if not bool(finite):
            raise NonFiniteLossError(
                f"the model's parameters became NaN or infinite at step {step}; stopping without "
                f"checkpointing this state (the last good checkpoint is {last_checkpoint}). "
                "Try a lower optimizer.lr or train.clip_grad."
            )

    try:
        model.train()
        for epoch in range(start_epoch, train.epochs):
            first = start_batch if epoch == start_epoch else 0
            for batch_index, (inputs, labels) in enumerate(
                data.batches.epoch(epoch, first), start=first
            ):
                if batch_index >= batches_used:
                    break
                with accelerator.accumulate(model):
                    views = augment(inputs)
                    if channels_last:
                        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                    micro_step = global_step * train.grad_accum + batch_index % train.grad_accum
                    out = model(views, labels, step=micro_step, generator=mix_generator)
                    accelerator.backward(out.loss)
                    if accelerator.sync_gradients and train.clip_grad is not None:
                        accelerator.clip_grad_norm_(model.parameters(), train.clip_grad)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                logged = out.logged()
                values = torch.stack([v.detach().float() for v in logged.values()])
                values = values / train.grad_accum
                if loop["window"] is None:
                    loop.update(
                        keys=list(logged),
                        window=torch.zeros_like(values),
                        epoch_sums=torch.zeros_like(values),
                    )
                loop["window"] += values
                loop["epoch_sums"] += values
                nonfinite |= ~torch.isfinite(out.loss.detach())
                if not accelerator.sync_gradients:
                    continue

                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                plain_model.on_optimizer_step(global_step, total_steps)
                global_step += 1
                loop["steps_in_log"] += 1
                bar.update(1)
                end_of_epoch = batch_index + 1 == batches_used
                signum = stop.agreed()

                row: dict[str, Any] = {}
                end: EpochEnd | None = None
                if end_of_epoch:
                    check_finite(global_step)
                    means = accelerator.reduce(loop["epoch_sums"], reduction="mean")
                    loop["epoch_sums"].zero_()
                    end = EpochEnd(
                        model=plain_model,
                        config=config,
                        run_dir=run_dir,
                        epoch=epoch + 1,
                        step=global_step,
                        lr=lr,
                        train_means=dict(zip(loop["keys"], (means / steps_per_epoch).tolist())),
                        test=data.knn_test,
                        transform=eval_transform,
                        accelerator=accelerator,
                        elapsed_s=time.perf_counter() - run_start,
                    )
                    if is_main:
                        knn_due = train.knn_every and (epoch + 1) % train.knn_every == 0
                        if knn_due and data.knn_test is not None:
                            row.update(
                                _monitor(
                                    plain_model, data, config, accelerator, eval_view, channels_last
                                )
                            )
                        row.update(task.evaluate(end))
                    accelerator.wait_for_everyone()
                if global_step % train.log_every == 0 or end_of_epoch or signum:
                    steps_in_log = loop["steps_in_log"]
                    sums = accelerator.reduce(loop["window"], reduction="mean")
                    means_logged = dict(zip(loop["keys"], (sums / steps_in_log).tolist()))
                    if not all(math.isfinite(value) for value in means_logged.values()):
                        check_finite(global_step)
                    now = time.perf_counter()
                    images_per_s = steps_in_log * global_batch / max(now - log_time, 1e-9)
                    row.update(
                        step=global_step,
                        epoch=round(global_step / steps_per_epoch, 6),
                        lr=lr,
                        images_per_s=round(images_per_s, 2),
                        elapsed_s=round(now - run_start, 3),
                        **means_logged,
                    )
                    if is_main:
                        logger.log(row)
                        bar.set_postfix(
                            loss=f"{means_logged['loss']:.4f}",
                            lr=f"{lr:.3g}",
                            img_s=f"{images_per_s:.0f}",
                        )
                    loop["window"].zero_()
                    loop["steps_in_log"], log_time = 0, now
                if end is not None and is_main:
                    _plot_curves(logger.path, run_dir / CURVES_FILE)
                    task.epoch_done(end, row)
                periodic = train.checkpoint_every and global_step % train.checkpoint_every == 0
                if periodic or end_of_epoch or signum:
                    check_finite(global_step)
                    check_parameters(global_step)
                    position = (epoch + 1, 0) if end_of_epoch else (epoch, batch_index + 1)
                    last_checkpoint = save(global_step, *position)
                if signum:
                    name = signal.Signals(signum).name
                    return PretrainResult(run_dir, global_step, position[0], last_checkpoint, name)
            start_batch = 0
        return PretrainResult(run_dir, global_step, train.epochs, last_checkpoint)
    finally:
        stop.restore()
        bar.close()
        if is_main:
            logger.close()


# ---------------------------------------------------------------- command line


def build_parser(task: TrainingTask | None = None) -> argparse.ArgumentParser:
    """The command line of `task`'s command (pretraining by default)."""
    task = task if task is not None else TrainingTask()
    parser = argparse.ArgumentParser(
        prog=task.command, description=task.description, epilog=f"Example: {task.example}"
    )
    parser.add_argument("--config", type=Path, help="YAML config file (see the package README)")
    parser.add_argument("--output-dir", help="run directory (overrides train.output_dir)")
    parser.add_argument("--data-dir", help="data location (overrides data.data_dir)")
    parser.add_argument(
        "--resume",
        metavar="latest|PATH",
        help="continue from the newest checkpoint of the output dir, or from a checkpoint folder / run dir",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.field=value",
        help="config overrides, values parsed as YAML",
    )
    return parser


def config_from_args(
    args: argparse.Namespace, config_class: type[PretrainConfig] = PretrainConfig
) -> PretrainConfig:
    """The config a command line describes: --config (or the resumed run's config.yaml) + overrides."""
    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"train.output_dir={json.dumps(args.output_dir)}")
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.config is not None:
        raw = read_config_file(args.config)
    elif args.resume is not None:
        if args.resume == "latest":
            if args.output_dir is None:
                raise ValueError(
                    "--resume latest without --config needs --output-dir (the run to continue)"
                )
            source = Path(args.output_dir) / ckpt.CONFIG_FILE
        else:
            source = ckpt.resolve_checkpoint(args.resume) / ckpt.CONFIG_FILE
        raw = read_config_file(source)
    else:
        raise ValueError(
            "--config is required (or --resume to continue a run from its saved config)"
        )
    return config_from_dict(apply_overrides(raw, overrides, config_class), config_class)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point. Returns the exit status: 0 done, 1 non-finite loss, 2 bad input,
    128 + signal number when SIGTERM/SIGINT stopped the run (after saving a checkpoint)."""
    return run_command(TrainingTask(), argv)


def run_command(task: TrainingTask, argv: Sequence[str] | None = None) -> int:
    """The command line of `task` (pretraining, joint training): parse, run, exit status as `main`."""
    command = task.command
    args = build_parser(task).parse_args(argv)
    is_main = int(os.environ.get("RANK", "0")) == 0
    try:
        config = config_from_args(args, task.config_class)
        result = run_training(config, task, resume=args.resume)
    except (ValueError, FileNotFoundError) as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"{command}: stopped: {error}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if result.stopped_by is not None:
        if is_main:
            print(
                f"{command}: stopped by {result.stopped_by} at step {result.step}; "
                f"checkpoint {result.checkpoint}; continue with --resume latest --output-dir {result.run_dir}",
                file=sys.stderr,
            )
        return 128 + int(signal.Signals[result.stopped_by])
    if is_main:
        print(
            f"{command}: done, {result.step} steps; checkpoint {result.checkpoint}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
