"""FLOP counts of the backbones (torch.utils.flop_counter.FlopCounterMode), and MFU from them.

One FLOP is one multiply or one add, so a multiply-accumulate counts 2, as FlopCounterMode and
the research note (1.111 GFLOP per 32 px image for the ResNet-18-CIFAR forward) count. Only
matrix products and convolutions are counted: BatchNorm, ReLU and the additions of the residual
branches are memory-bound and left out, as MFU conventionally does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from contrastkit.backbones import create_backbone

BACKBONES = ("resnet18_cifar", "myresnet")


def count_backbone(name: str, size: int = 32, images: int = 2) -> dict[str, float]:
    """Per image: the forward FLOPs and the forward + backward FLOPs of backbone `name` in train
    mode on `size` px inputs (counted on `images` random CPU images; counts do not depend on the
    device or on the values)."""
    torch.manual_seed(0)
    model = create_backbone(name).train()
    x = torch.randn(images, 3, size, size)
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as both:
        model(x).float().sum().backward()
    return {
        "forward_flops_per_image": forward.get_total_flops() / images,
        "forward_backward_flops_per_image": both.get_total_flops() / images,
        "parameters": float(sum(p.numel() for p in model.parameters())),
    }


def count_all() -> dict[str, dict[str, float]]:
    """count_backbone for every backbone the check trains, keyed by name."""
    return {name: count_backbone(name) for name in BACKBONES}


def utilisation(
    flops_per_step: float | None, step_s: float, peak_tflops: float | None
) -> dict[str, Any]:
    """model_flops_per_step (as given), achieved_tflops = flops / step_s / 1e12, and
    mfu = achieved / peak (None when the FLOPs or the peak are unknown)."""
    if flops_per_step is None:
        return {"model_flops_per_step": None, "achieved_tflops": None, "mfu": None}
    achieved = flops_per_step / step_s / 1e12
    return {
        "model_flops_per_step": flops_per_step,
        "achieved_tflops": achieved,
        "mfu": achieved / peak_tflops if peak_tflops else None,
    }
