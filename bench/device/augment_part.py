"""Augmentation throughput: SimCLR views made by contrastkit.augment on the device (one batched
call for the batch) against torchvision v2 one image at a time on every CPU core (a DataLoader
with settings.workers processes), and kornia's batched pipeline on the device for reference.

Every row is the best of the same settings.augment_reps timed repetitions after a warm-up; a
repetition is settings.augment_calls calls on the batch for the device rows and one epoch of
batches for the DataLoader row (bench/augment.py). The share of a training step is worked out in
results.json's summary, from this row and the pipeline's step time.
"""

from __future__ import annotations

from typing import Any

import torch
from _peak_memory import PeakMemory  # bench/ is on sys.path (run.py)
from augment import bench_torchvision_loader, best_seconds, kornia_simclr  # bench/augment.py
from settings import Settings

from contrastkit.augment import make_views


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _seconds_per_call(fn: Any, settings: Settings) -> float:
    """Best seconds of one call of `fn` (a repetition is settings.augment_calls calls)."""

    def repetition() -> None:
        for _ in range(settings.augment_calls):
            fn()

    wall, _ = best_seconds(repetition, settings.augment_reps, lambda: _sync(settings.device))
    return wall / settings.augment_calls


def augmentation(settings: Settings) -> dict[str, Any]:
    """views/s of ours on the device, of torchvision on the CPU cores and of kornia on the device,
    for two SimCLR views of settings.batch 32 px images."""
    images = settings.images.inputs[: settings.batch]
    batch = images.to(settings.device)
    views = make_views("simclr_views", 32, seed=0)
    with PeakMemory(settings.device) as peak:
        ours_s = _seconds_per_call(lambda: views(batch), settings)
    torchvision_views_per_s, _ = bench_torchvision_loader(
        images, settings.workers, settings.augment_reps
    )
    ours_views_per_s = 2 * len(images) / ours_s
    row: dict[str, Any] = {
        "batch": len(images),
        "ours_device_views_per_s": ours_views_per_s,
        "ours_ms_per_batch": ours_s * 1e3,
        "ours_peak_memory_mib": peak.mib,
        "torchvision_cpu_views_per_s": torchvision_views_per_s,
        "torchvision_workers": settings.workers,
        "ours_vs_torchvision": ours_views_per_s / torchvision_views_per_s,
    }
    try:  # a reference row only: its failure must not cost the rows above
        kornia_views = kornia_simclr(32).to(settings.device)
        # One call makes one view of each image.
        kornia_s = _seconds_per_call(lambda: kornia_views(batch.float() / 255), settings)
        row["kornia_device_views_per_s"] = len(images) / kornia_s
    except Exception as error:
        row["kornia_error"] = f"{type(error).__name__}: {error}"
    return row
