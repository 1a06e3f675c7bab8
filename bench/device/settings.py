"""The sizes and inputs every part of the device check reads: the GPU run's, or the dry run's.

The GPU sizes are those of the issue's goals (SimCLR ResNet-18-CIFAR at batch 512 in bf16, one
CIFAR-10 epoch of 97 steps, losses at N = 4096). The dry run uses the same code on the CPU at a
tiny size in fp32 (bf16 on a CPU without bf16 units is about 14x slower than fp32) with
torch.compile disabled (Inductor's C++ build takes minutes), so it proves that every part runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from _pretrain_cases import cifar_images, synthetic_images  # bench/ is on sys.path (run.py)

from contrastkit.pipelines.data import InMemoryDataset


@dataclass
class Settings:
    """What the parts measure with.

    device: where ours runs (cuda, or cpu in the dry run); precision: "bf16" or "no" (fp32), as
    accelerate's mixed_precision. batch: images per optimizer step (2 views each); warmup, steps:
    untimed and timed optimizer steps of every pretrain loop (warmup + steps = 97 is one CIFAR-10
    epoch at batch 512); workers: DataLoader processes of the CPU loops; queue_size: ISD's queue.
    images: uint8 (batch * (warmup + steps), 3, 32, 32) training images and where they come from.
    augment_reps, augment_calls: timed repetitions (best kept) and calls per repetition of the
    augmentation rows. loss_n, loss_queue, loss_repeats: the losses' batch N, MoCo queue K and
    timed calls. backbone_batch, backbone_warmup, backbone_steps: the backbone rows' images per
    step, untimed and timed steps. peak_tflops: the accelerator's dense bf16 peak in TFLOP/s, or
    None when unknown; peak_source says where it came from. flops: per backbone name, the FLOP
    counts the flops part found (filled by it).
    """

    dry_run: bool
    device: torch.device
    precision: str
    batch: int
    warmup: int
    steps: int
    workers: int
    queue_size: int
    images: InMemoryDataset
    data_source: str
    augment_reps: int
    augment_calls: int
    loss_n: int
    loss_queue: int
    loss_repeats: int
    backbone_batch: int
    backbone_warmup: int
    backbone_steps: int
    peak_tflops: float | None
    peak_source: str
    flops: dict[str, dict[str, float]] = field(default_factory=dict)

    def sizes(self) -> dict[str, Any]:
        """The numbers above (and the precision), for results.json."""
        inputs = {
            "dry_run",
            "device",
            "images",
            "data_source",
            "peak_tflops",
            "peak_source",
            "flops",
        }
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in inputs}


def make_settings(
    dry_run: bool,
    data_dir: Path | None,
    peak: tuple[float | None, str],
) -> Settings:
    """The GPU run's settings, or the dry run's. data_dir: CIFAR-10 to train on (None: synthetic
    uint8 images of CIFAR's shape: the timing does not depend on what the pixels are)."""
    if dry_run:
        sizes: dict[str, Any] = {
            "device": torch.device("cpu"),
            "precision": "no",
            "batch": 8,
            "warmup": 1,
            "steps": 2,
            "workers": 1,
            "queue_size": 64,
            "augment_reps": 2,
            "augment_calls": 1,
            "loss_n": 64,
            "loss_queue": 256,
            "loss_repeats": 2,
            "backbone_batch": 4,
            "backbone_warmup": 1,
            "backbone_steps": 1,
        }
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run the check on a GPU machine, or pass --dry-run")
        sizes = {
            "device": torch.device("cuda"),
            "precision": "bf16",
            "batch": 512,
            "warmup": 40,
            "steps": 57,
            "workers": os.cpu_count() or 1,
            "queue_size": 16384,
            "augment_reps": 5,
            "augment_calls": 20,
            "loss_n": 4096,
            "loss_queue": 65536,
            "loss_repeats": 10,
            "backbone_batch": 1024,  # the 2 x 512 views of a SimCLR step, in one forward
            "backbone_warmup": 3,
            "backbone_steps": 20,
        }
    count = sizes["batch"] * (sizes["warmup"] + sizes["steps"])
    if data_dir is None:
        images, source = synthetic_images(count), "synthetic uint8 CIFAR-shaped images (random)"
    else:
        images, source = cifar_images(data_dir, count), f"CIFAR-10 training images from {data_dir}"
    return Settings(
        dry_run=dry_run,
        images=images,
        data_source=f"{source}, {count} of them",
        peak_tflops=peak[0],
        peak_source=peak[1],
        **sizes,
    )
