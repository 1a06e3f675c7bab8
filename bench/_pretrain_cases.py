"""The pretrain bench's cases, images and timing record, and the timed run of the real pipeline.

Shared by bench/pretrain.py, the same-work loops in _pretrain_loops.py and bench/device/.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contrastkit.pipelines.data import InMemoryDataset

CIFAR_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"
CIFAR_TRAIN = 50_000
CIFAR_CLASSES = [str(i) for i in range(10)]


@dataclass
class Case:
    """A pretrain bench case: its table name, `method.name`, `model.backbone` and the
    `data.augment` recipe (contrastkit.augment's name; the baselines write it with torchvision)."""

    name: str
    method: str
    backbone: str
    augment: str


CASES = {
    "simclr_resnet18": Case("SimCLR ResNet-18-CIFAR", "simclr", "resnet18_cifar", "simclr_views"),
    "isd_myresnet": Case("ISD MyResNet", "isd", "myresnet", "isd_views"),
}


@dataclass
class Timing:
    """One loop's time. warmup_s: wall seconds of the first `warmup` steps (start-up, compile,
    autotune, DataLoader workers filling their queues); step_s: mean seconds per optimizer step
    over the `steps` steps after them; batch: images per step (each gives its views)."""

    warmup: int
    warmup_s: float
    steps: int
    step_s: float
    batch: int

    @property
    def images_per_s(self) -> float:
        return self.batch / self.step_s

    @property
    def epoch_s(self) -> float:
        """Seconds per CIFAR-10 epoch: 50,000 // batch steps (the last partial batch dropped)."""
        return self.step_s * (CIFAR_TRAIN // self.batch)


def pretrain_config(
    case: Case,
    batch: int,
    warmup: int,
    output_dir: Path,
    *,
    compile_model: bool = False,
    queue_size: int = 16384,
) -> dict[str, Any]:
    """The pipeline config every loop of the bench follows: one epoch over the images it is given,
    a metrics row every `warmup` steps (so one lands exactly at the end of the warm-up) and at the
    end; no checkpoints inside the epoch, no kNN monitor."""
    return {
        "method": {"name": case.method, "queue_size": queue_size},
        "model": {"backbone": case.backbone, "channels_last": True, "compile": compile_model},
        "data": {"dataset": "cifar10", "augment": case.augment},
        "train": {
            "epochs": 1,
            "batch_size": batch,
            "warmup_epochs": 0.5,  # LR warm-up then cosine decay: both parts of the schedule run
            "log_every": warmup,
            "checkpoint_every": 0,
            "knn_every": 0,
            "output_dir": str(output_dir),
            "progress_bar": False,
        },
    }


def synthetic_images(count: int, seed: int = 0) -> InMemoryDataset:
    """`count` random uint8 (3, 32, 32) images with labels i % 10, CIFAR-10's shape and dtype."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return InMemoryDataset(images, torch.arange(count) % 10, CIFAR_CLASSES, "image")


def cifar_images(data_dir: Path, count: int, seed: int = 0) -> InMemoryDataset:
    """A class-balanced subset of `count` CIFAR-10 training images read from `data_dir`."""
    from contrastkit.pipelines.data import balanced_subset, load_dataset

    full = load_dataset("cifar10", data_dir, "train", verbose=False)
    if count > len(full.labels):
        raise SystemExit(
            f"{count} images asked for (batch x (warmup + steps)), CIFAR-10 has {len(full.labels)}"
        )
    if count == len(full.labels):
        return full
    index = balanced_subset(full.labels, count, seed)
    return InMemoryDataset(full.inputs[index], full.labels[index], full.classes, "image")


def time_ours(
    case: Case,
    images: InMemoryDataset,
    batch: int,
    warmup: int,
    *,
    compile_model: bool = False,
    queue_size: int = 16384,
) -> Timing:
    """The real pipeline over `images` (one epoch of len(images) // batch steps), timed from the
    `elapsed_s` of its metrics.csv rows: the row at step `warmup` and the last one. Mixed precision
    comes from ACCELERATE_MIXED_PRECISION, as under `accelerate launch`."""
    from contrastkit.pipelines.config import config_from_dict
    from contrastkit.pipelines.metrics import read_metrics
    from contrastkit.pipelines.pretrain import run_pretrain

    total = len(images) // batch
    if not 1 <= warmup < total:
        raise ValueError(f"warmup must be in [1, {total}) for {total} steps, got {warmup}")
    # The first metrics row opens the TensorBoard writer, and importing it takes seconds: a
    # one-time start-up cost that would otherwise land in the timed steps (the writer itself is
    # still made there, as in every run). Without tensorboard the pipeline writes metrics.csv only.
    with contextlib.suppress(ImportError):
        import torch.utils.tensorboard  # noqa: F401
    with tempfile.TemporaryDirectory() as tmp:
        raw = pretrain_config(
            case,
            batch,
            warmup,
            Path(tmp) / "run",
            compile_model=compile_model,
            queue_size=queue_size,
        )
        result = run_pretrain(config_from_dict(raw), train_data=images)
        rows = read_metrics(result.run_dir / "metrics.csv")
    elapsed = {int(row["step"]): float(row["elapsed_s"]) for row in rows}
    if warmup not in elapsed or total not in elapsed:
        raise RuntimeError(f"metrics.csv has no row at step {warmup} or {total}: {sorted(elapsed)}")
    steps = total - warmup
    return Timing(warmup, elapsed[warmup], steps, (elapsed[total] - elapsed[warmup]) / steps, batch)
