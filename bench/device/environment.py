"""What the device check ran on: Python, torch, CUDA, the GPU and its bf16 peak, the packages.

The peak is the dense bf16 tensor-core rate from the vendor's spec sheet (no sparsity), the
denominator of MFU; a GPU not in the table gets "unknown" and no MFU, unless --peak-tflops says.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from typing import Any

import torch
from _machine import cpu_name  # bench/ is on sys.path (run.py)

# (part of torch.cuda.get_device_name(), dense bf16 TFLOP/s); the first match wins, so the
# specific names come before "H100".
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (HBM3)
    ("A100", 312.0),
)

PACKAGES = (
    "torchvision",
    "timm",
    "accelerate",
    "kornia",
    "lightly",
    "contrastkit.objectives",
    "contrastkit.augment",
    "contrastkit.backbones",
    "contrastkit.pipelines",
)


def peak_tflops(given: float | None) -> tuple[float | None, str]:
    """(dense bf16 peak in TFLOP/s or None, where that number comes from)."""
    if given is not None:
        return given, "given with --peak-tflops"
    if not torch.cuda.is_available():
        return None, "unknown (no CUDA device)"
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, f"spec sheet, dense bf16, {key}"
    return None, f"unknown ({name} is not in bench/device/environment.py's table)"


def _version(module: str) -> str:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))
    except Exception as error:  # a missing or broken package is a fact to report, not a stop
        return f"not importable ({type(error).__name__}: {error})"


def describe() -> dict[str, Any]:
    """The machine and software, for results.json (and printed by run.py)."""
    facts: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "gpu": "none",
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_multiprocessors=props.multi_processor_count,
            gpu_capability=f"{props.major}.{props.minor}",
        )
    facts["packages"] = {name: _version(name) for name in PACKAGES}
    return facts
