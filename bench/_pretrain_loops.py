"""Loops that do one pipeline step's work with the usual CPU data path, for bench/pretrain.py.

`time_baseline`: torchvision transforms of the same recipe on PIL images in DataLoader workers,
the model the pipeline builds (`training.model.build_model`: same backbone, heads, channels_last)
and what one step of `training/loop.py` does: the forward under autocast, the backward (through a
GradScaler for fp16, as accelerate does), the method's `after_backward`, the optimizer step and
zero_grad, the running sums of the logged values and the non-finite flag on the device, the LR
schedule (`optim.build_scheduler`, the pipeline's warm-up + cosine or step schedule), the method's
`on_optimizer_step` (its EMA teacher), and at logging steps the host read of the window's means.
`time_lightly_style`: lightly's SimCLRTransform in the workers and lightly.loss.NTXentLoss on the
same encoder, one forward per view as lightly's examples do; the same optimizer, schedule and
logging.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _pretrain_cases import CASES, Case, Timing, pretrain_config  # bench/ is on sys.path
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from contrastkit.pipelines.data import InMemoryDataset
from contrastkit.pipelines.training.running_sums import RunningSums

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

# One optimizer step: (the loader's batch, the 0-based step) -> (logged scalars, the loss).
StepFunction = Callable[[Any, int], tuple[Mapping[str, Tensor], Tensor]]


class _OneProcess:
    """What RunningSums asks of an Accelerator, for one process: the mean over processes is the
    tensor itself."""

    @staticmethod
    def reduce(tensor: Tensor, reduction: str = "mean") -> Tensor:
        return tensor


class LogWindow:
    """The pipeline's per-step logging work: `training.running_sums.RunningSums` itself (each
    step's logged 0-dim tensors stacked and added to the window's and the epoch's sums on the
    device) and the loop's non-finite flag; `read` is a metrics row: the window's means on the
    host (the one device sync), then an empty window."""

    def __init__(self) -> None:
        self.sums = RunningSums()
        self.nonfinite: Tensor | None = None  # () bool

    @property
    def steps(self) -> int:
        """Steps in the current window."""
        return self.sums.steps_in_log

    def add(self, logged: Mapping[str, Tensor], loss: Tensor) -> None:
        self.sums.add(logged, grad_accum=1)
        self.sums.step_done()
        if self.nonfinite is None:
            self.nonfinite = torch.zeros((), dtype=torch.bool, device=loss.device)
        self.nonfinite |= ~torch.isfinite(loss.detach())

    def read_epoch(self, steps: int) -> list[float]:
        """The epoch's means over its `steps` steps (a device sync), as the pipeline's epoch end."""
        return list(self.sums.epoch_means(_OneProcess(), steps).values())  # type: ignore[arg-type]

    def read(self) -> list[float]:
        """The window's means (a device sync); raises FloatingPointError if one is not finite."""
        assert self.steps > 0
        means = list(self.sums.window_means(_OneProcess()).values())  # type: ignore[arg-type]
        if not all(math.isfinite(value) for value in means):
            raise FloatingPointError(f"a logged value is not finite: {means}")
        self.sums.start_window()
        return means


def run_steps(
    batches: Iterable[Any], step: StepFunction, warmup: int, steps: int, batch: int
) -> Timing:
    """`warmup + steps` calls of `step` over `batches`, with a metrics row (`LogWindow.read`)
    every `warmup` steps and after the last (after the epoch's means, as at the pipeline's epoch
    end), as the pipeline logs with train.log_every = warmup.
    The timed span runs from the row at the end of the warm-up to the last row, both read right
    after a device sync."""
    total, window = warmup + steps, LogWindow()
    start = time.perf_counter()
    warm_end = last_row = start
    done = 0
    for done, item in enumerate(batches, start=1):
        logged, loss = step(item, done - 1)
        window.add(logged, loss)
        if done == total:
            window.read_epoch(total)
        if done % warmup == 0 or done == total:
            window.read()
            last_row = time.perf_counter()
            if done == warmup:
                warm_end = last_row
        if done == total:
            break
    if done < total:
        raise RuntimeError(f"the loader gave {done} batches, {total} were needed")
    return Timing(warmup, warm_end - start, steps, (last_row - warm_end) / steps, batch)


class MultiView:
    """A PIL image -> the list of its views, one per torchvision pipeline."""

    def __init__(self, views: list[T.Compose]) -> None:
        self.views = views

    def __call__(self, image: Image.Image) -> list[Tensor]:
        return [view(image) for view in self.views]


class PilImages(Dataset):
    """uint8 (N, H, W, 3) images as PIL images; item i is (transform(image i), label i)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Tensor,
        transform: Callable[[Image.Image], list[Tensor]],
    ) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[list[Tensor], Tensor]:
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def torchvision_views(recipe: str) -> MultiView:
    """The contrastkit.augment recipe `recipe` written with torchvision transforms (one PIL image
    at a time): simclr_views (two SimCLR views) or isd_views (weak, strong)."""
    normalize = [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
    simclr = T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            jitter,
            T.RandomGrayscale(0.2),
            *normalize,
        ]
    )
    if recipe == "simclr_views":
        return MultiView([simclr, simclr])
    if recipe != "isd_views":
        raise ValueError(f"no torchvision version of the recipe {recipe!r}")
    weak = T.Compose(
        [T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomHorizontalFlip(), *normalize]
    )
    strong = T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            jitter,
            T.RandomGrayscale(0.2),
            *normalize,
        ]
    )
    return MultiView([weak, strong])


def image_loader(
    images: InMemoryDataset,
    transform: Callable[[Image.Image], list[Tensor]],
    batch: int,
    workers: int,
    device: torch.device,
) -> DataLoader:
    """Shuffled batches of (list of (B, 3, 32, 32) float views, (B,) labels) made by `workers`
    DataLoader processes from `images` (uint8 (N, 3, 32, 32)); the last partial batch dropped."""
    nhwc = images.inputs.permute(0, 2, 3, 1).contiguous().numpy()
    return DataLoader(
        PilImages(nhwc, images.labels, transform),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )


class TrainingObjects:
    """What the pipeline builds for `config` (training/model.py), without accelerate: the
    PretrainModel on `device`, its optimizer at the scaled peak lr, the LR schedule over
    `total_steps` steps (one epoch), the autocast dtype and a GradScaler (enabled for fp16)."""

    def __init__(self, config: Any, device: torch.device, total_steps: int, precision: str) -> None:
        from contrastkit.pipelines.optim import build_optimizer, build_scheduler, scaled_lr
        from contrastkit.pipelines.pretrain import PretrainTask
        from contrastkit.pipelines.training.model import build_model

        task, train = PretrainTask(), config.train
        torch.manual_seed(train.seed)
        self.model: nn.Module = build_model(config, task, 10, 1, device).to(device).train()
        self.optimizer = build_optimizer(
            self.model,
            config.optimizer,
            scaled_lr(config.optimizer, train.batch_size),
            exclude_from_decay=task.decay_exclusions(self.model),
            static_lr=task.static_lr_modules(self.model),
        )
        self.scheduler = build_scheduler(
            self.optimizer,
            config.optimizer,
            steps_per_epoch=total_steps,
            epochs=train.epochs,
            warmup_epochs=train.warmup_epochs,
        )
        self.total_steps = total_steps
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None
        )

    def to_device(self, views: list[Tensor]) -> list[Tensor]:
        """Views copied to the device in channels_last, as the pipeline feeds its model."""
        return [
            view.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            for view in views
        ]

    def optimizer_step(self, loss: Tensor, step: int) -> None:
        """Backward, the optimizer step and what follows it, in the pipeline's order."""
        self.scaler.scale(loss).backward()
        self.model.after_backward(0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.get_last_lr()  # the lr a metrics row reports
        self.scheduler.step()
        self.model.on_optimizer_step(step, self.total_steps)


def pipeline_step(train: TrainingObjects) -> StepFunction:
    """One step of the pipeline's model on a loader batch (list of (B, C, H, W) views, (B,)
    labels): the forward under autocast, then `optimizer_step`."""

    def step(item: tuple[list[Tensor], Tensor], index: int) -> tuple[Mapping[str, Tensor], Tensor]:
        views, labels = item
        with train.autocast():
            out = train.model(
                train.to_device(views),
                labels.to(train.device, non_blocking=True),
                step=index,
                epoch=0,
            )
        train.optimizer_step(out.loss, index)
        return out.logged(), out.loss

    return step


def _config(case: Case, batch: int, warmup: int) -> Any:
    from contrastkit.pipelines.config import config_from_dict

    return config_from_dict(pretrain_config(case, batch, warmup, Path("unused")))


def time_baseline(
    case: Case,
    images: InMemoryDataset,
    batch: int,
    warmup: int,
    workers: int,
    device: torch.device,
    precision: str,
) -> Timing:
    """One epoch over `images` (len(images) // batch steps, `warmup` of them untimed) of the
    pipeline's step fed by torchvision transforms in `workers` DataLoader processes."""
    total = len(images) // batch
    train = TrainingObjects(_config(case, batch, warmup), device, total, precision)
    loader = image_loader(images, torchvision_views(case.augment), batch, workers, device)
    return run_steps(loader, pipeline_step(train), warmup, total - warmup, batch)


def time_lightly_style(
    images: InMemoryDataset,
    batch: int,
    warmup: int,
    workers: int,
    device: torch.device,
    precision: str,
) -> Timing:
    """SimCLR as lightly's examples write it, on the pipeline's ResNet-18-CIFAR encoder: views from
    lightly's SimCLRTransform (CIFAR settings: 32 px, colour-jitter strength 0.5, no blur, CIFAR
    mean/std) in `workers` DataLoader processes, z0 = encoder(x0), z1 = encoder(x1) under
    autocast, lightly.loss.NTXentLoss on them; the pipeline's optimizer, schedule and logging.
    Raises ImportError without lightly."""
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform

    total = len(images) // batch
    config = _config(CASES["simclr_resnet18"], batch, warmup)
    train = TrainingObjects(config, device, total, precision)
    encoder = train.model.method.encoder
    criterion = NTXentLoss(temperature=config.method.temperature)
    transform = SimCLRTransform(
        input_size=32,
        cj_strength=0.5,
        gaussian_blur=0.0,
        normalize={"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)},
    )

    def step(item: tuple[list[Tensor], Tensor], index: int) -> tuple[Mapping[str, Tensor], Tensor]:
        x0, x1 = train.to_device(item[0])
        with train.autocast():
            z0, z1 = encoder(x0)[1], encoder(x1)[1]
        loss = criterion(z0.float(), z1.float())
        train.optimizer_step(loss, index)
        return {"loss": loss}, loss

    loader = image_loader(images, transform, batch, workers, device)
    return run_steps(loader, step, warmup, total - warmup, batch)
