"""Backbone throughput, eager and compiled: forward + backward of a backbone and a linear head on
settings.backbone_batch random 32 px images (bench/backbones.py), bf16 autocast and channels_last
on the GPU (fp32 in the dry run). Compiled = the backbone compiled in place, as the pipeline's
`model.compile`; compilation happens in the untimed warm-up steps, reported as warmup_s.
"""

from __future__ import annotations

from typing import Any

import torch
from _peak_memory import PeakMemory  # bench/ is on sys.path (run.py)
from backbones import Setting, time_setting  # bench/backbones.py
from flops import utilisation
from settings import Settings

LABELS = {"resnet18_cifar": "ResNet-18-CIFAR", "myresnet": "MyResNet"}


def backbone_throughput(settings: Settings, name: str, compiled: bool) -> dict[str, Any]:
    """images/s, step time, warm-up (compile) time, peak memory and MFU of one backbone."""
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32
    setting = Setting(settings.device.type, dtype, channels_last=True, compiled=compiled)
    batch = settings.backbone_batch
    with PeakMemory(settings.device) as peak:
        timing = time_setting(
            LABELS[name], setting, batch, 32, settings.backbone_steps, settings.backbone_warmup
        )
    counts = settings.flops.get(name)
    per_image = counts["forward_backward_flops_per_image"] if counts else None
    row = {
        "batch": batch,
        "setting": setting.label(),
        "warmup_steps": settings.backbone_warmup,
        "warmup_s": timing.warmup_s,
        "timed_steps": settings.backbone_steps,
        "step_s": timing.step_s,
        "images_per_s": batch / timing.step_s,
        "peak_memory_mib": peak.mib,
        **utilisation(
            per_image * batch if per_image is not None else None,
            timing.step_s,
            settings.peak_tflops,
        ),
    }
    if compiled and settings.dry_run:
        row["note"] = "torch.compile is disabled in the dry run: this row ran eagerly"
    return row
