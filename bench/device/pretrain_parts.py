"""The pretrain measurements: one CIFAR-10 epoch of SimCLR ResNet-18-CIFAR (ours eager and
compiled, the same-work torchvision baseline, the lightly-style loop) and of ISD MyResNet (ours).

Each loop runs settings.warmup untimed then settings.steps timed optimizer steps over the same
images (bench/_pretrain_cases.py, bench/_pretrain_loops.py); every number per step comes from the
timed steps. MFU counts the backbone's FLOPs alone (the projection head and the loss add < 1 %):
SimCLR = forward + backward of both views, ISD = forward + backward of the student's view plus
the teacher's forward of the other.
"""

from __future__ import annotations

from typing import Any

from _peak_memory import PeakMemory  # bench/ is on sys.path (run.py)
from _pretrain_cases import CASES, Timing, time_ours
from _pretrain_loops import time_baseline, time_lightly_style
from flops import utilisation
from settings import Settings


def _flops_per_image(settings: Settings, method: str) -> float | None:
    if method == "simclr":
        counts = settings.flops.get("resnet18_cifar")
        return 2 * counts["forward_backward_flops_per_image"] if counts else None
    counts = settings.flops.get("myresnet")
    if not counts:
        return None
    return counts["forward_backward_flops_per_image"] + counts["forward_flops_per_image"]


def describe(timing: Timing, peak: PeakMemory, settings: Settings, method: str) -> dict[str, Any]:
    """A loop's row of results.json: its timing, memory and MFU."""
    per_image = _flops_per_image(settings, method)
    flops_per_step = per_image * timing.batch if per_image is not None else None
    return {
        "batch": timing.batch,
        "warmup_steps": timing.warmup,
        "warmup_s": timing.warmup_s,
        "timed_steps": timing.steps,
        "step_s": timing.step_s,
        "images_per_s": timing.images_per_s,
        "epoch_s": timing.epoch_s,
        "peak_memory_mib": peak.mib,
        **utilisation(flops_per_step, timing.step_s, settings.peak_tflops),
    }


def simclr_ours(settings: Settings, compiled: bool) -> dict[str, Any]:
    """The real pipeline: data on the device, views made there, channels_last, `model.compile`
    when `compiled` (a no-op in the dry run, where torch.compile is disabled)."""
    with PeakMemory(settings.device) as peak:
        timing = time_ours(
            CASES["simclr_resnet18"],
            settings.images,
            settings.batch,
            settings.warmup,
            compile_model=compiled,
            queue_size=settings.queue_size,
        )
    row = describe(timing, peak, settings, "simclr")
    if compiled and settings.dry_run:
        row["note"] = "torch.compile is disabled in the dry run: this row ran eagerly"
    return row


def simclr_baseline(settings: Settings) -> dict[str, Any]:
    """torchvision transforms of the same recipe in settings.workers DataLoader processes, the same
    model and the pipeline's whole step (bench/_pretrain_loops.py)."""
    with PeakMemory(settings.device) as peak:
        timing = time_baseline(
            CASES["simclr_resnet18"],
            settings.images,
            settings.batch,
            settings.warmup,
            settings.workers,
            settings.device,
            settings.precision,
        )
    return {"workers": settings.workers, **describe(timing, peak, settings, "simclr")}


def simclr_lightly(settings: Settings) -> dict[str, Any]:
    """lightly's SimCLRTransform in settings.workers DataLoader processes and its NTXentLoss, on
    the same encoder, optimizer and schedule."""
    with PeakMemory(settings.device) as peak:
        timing = time_lightly_style(
            settings.images,
            settings.batch,
            settings.warmup,
            settings.workers,
            settings.device,
            settings.precision,
        )
    return {"workers": settings.workers, **describe(timing, peak, settings, "simclr")}


def isd_ours(settings: Settings) -> dict[str, Any]:
    """ISD MyResNet through the real pipeline (eager), its queue of settings.queue_size keys."""
    with PeakMemory(settings.device) as peak:
        timing = time_ours(
            CASES["isd_myresnet"],
            settings.images,
            settings.batch,
            settings.warmup,
            queue_size=settings.queue_size,
        )
    return describe(timing, peak, settings, "isd")
